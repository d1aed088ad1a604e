#!/usr/bin/env node
// Ferry compatibility check: kafkajs.
//
// Produces 10,000 records (gzip, acks=-1) to partition 0 of a fresh topic
// (auto-created on first produce), then reads them back with a consumer
// group (kafkajs has no group-less consumer; groupId is unique per run,
// fromBeginning: true) and checks offset, key and value of every record.
//
// Env: FERRY_BOOTSTRAP (default 127.0.0.1:9092), FERRY_COMPAT_TIMEOUT (s, default 60),
// FERRY_CLIENT_PROPS (space-separated key=value TLS and SASL settings with
// Kafka's names, turned into kafkajs's own `ssl` and `sasl` options:
// security.protocol=PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL,
// sasl.mechanism=PLAIN|SCRAM-SHA-256|SCRAM-SHA-512, sasl.username,
// sasl.password, ssl.ca.location=<PEM file>; any other key is an error),
// FERRY_COMPAT_LOGLEVEL=debug|info|warn|error (kafkajs log level, default warn).
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const { Kafka, CompressionTypes, logLevel, Partitioners } = require('kafkajs');
const kafkajsVersion = require('kafkajs/package.json').version;

const CLIENT = 'kafkajs';
const N = 10000;
const BATCH = 1000;
const BOOTSTRAP = process.env.FERRY_BOOTSTRAP || '127.0.0.1:9092';
const TIMEOUT_S = Number(process.env.FERRY_COMPAT_TIMEOUT || '60');
const TOPIC = `compat-${CLIENT}-${crypto.randomBytes(5).toString('hex')}`;
const GROUP = `${TOPIC}-g`;
const START = Date.now();
const DEADLINE = START + TIMEOUT_S * 1000;

let phase = 'starting';
let groupJoined = false;
let got = 0;

function elapsed() {
  return ((Date.now() - START) / 1000).toFixed(2);
}

function log(msg) {
  process.stdout.write(`[${CLIENT} ${elapsed().padStart(6)}s] ${msg}\n`);
}

function fail(msg) {
  process.stderr.write(`FAIL [${CLIENT}] topic=${TOPIC}: ${msg}\n`, () => process.exit(1));
  // In case the write callback never runs.
  setTimeout(() => process.exit(1), 500).unref();
}

function describeStall() {
  if (phase === 'consuming' && !groupJoined) {
    return `consumer group "${GROUP}" never finished joining (no GROUP_JOIN event): ` +
      'the broker probably lacks or mis-answers FindCoordinator/JoinGroup/SyncGroup';
  }
  return `phase ${phase}, ${got} of ${N} records consumed`;
}

// FERRY_CLIENT_PROPS -> kafkajs's { ssl, sasl } (and a description for the log).
function securityOptions() {
  const props = {};
  for (const kv of (process.env.FERRY_CLIENT_PROPS || '').split(/\s+/).filter(Boolean)) {
    const i = kv.indexOf('=');
    const key = i > 0 ? kv.slice(0, i) : kv;
    if (!['security.protocol', 'sasl.mechanism', 'sasl.username', 'sasl.password', 'ssl.ca.location'].includes(key)) {
      throw new Error(`FERRY_CLIENT_PROPS: the kafkajs check does not know '${kv}'`);
    }
    props[key] = kv.slice(i + 1);
  }
  const protocol = (props['security.protocol'] || 'PLAINTEXT').toUpperCase();
  if (!['PLAINTEXT', 'SSL', 'SASL_PLAINTEXT', 'SASL_SSL'].includes(protocol)) {
    throw new Error(`security.protocol '${protocol}' is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL`);
  }
  const options = {};
  if (protocol.endsWith('SSL')) {
    const ca = props['ssl.ca.location'];
    options.ssl = ca ? { ca: [fs.readFileSync(ca, 'utf8')] } : true;
  }
  let what = protocol;
  if (protocol.startsWith('SASL_')) {
    const mechanism = (props['sasl.mechanism'] || '').toLowerCase();
    if (!['plain', 'scram-sha-256', 'scram-sha-512'].includes(mechanism)) {
      throw new Error(`sasl.mechanism '${props['sasl.mechanism']}' is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512`);
    }
    options.sasl = { mechanism, username: props['sasl.username'], password: props['sasl.password'] };
    what += ` ${mechanism.toUpperCase()} as ${props['sasl.username']}`;
  }
  return { options, what };
}

let security;
try {
  security = securityOptions();
} catch (e) {
  fail(e.message);
  security = { options: {}, what: 'bad FERRY_CLIENT_PROPS' };
}

const levelName = (process.env.FERRY_COMPAT_LOGLEVEL || 'warn').toUpperCase();
const kafka = new Kafka({
  clientId: 'ferry-compat-kafkajs',
  brokers: BOOTSTRAP.split(','),
  logLevel: logLevel[levelName] !== undefined ? logLevel[levelName] : logLevel.WARN,
  connectionTimeout: 5000,
  requestTimeout: 15000,
  retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 2000 },
  ...security.options,
});

async function produce() {
  phase = 'producing';
  const producer = kafka.producer({
    allowAutoTopicCreation: true,
    idempotent: false,
    createPartitioner: Partitioners.LegacyPartitioner,
  });
  await producer.connect();
  let expected = 0;
  for (let start = 0; start < N; start += BATCH) {
    const messages = [];
    for (let i = start; i < Math.min(start + BATCH, N); i++) {
      messages.push({ key: `k${i}`, value: `${CLIENT}-${i}`, partition: 0 });
    }
    const res = await producer.send({
      topic: TOPIC,
      acks: -1,
      compression: CompressionTypes.GZIP,
      messages,
    });
    if (res.length !== 1 || res[0].partition !== 0 || res[0].errorCode !== 0) {
      throw new Error(`unexpected produce response for records ${start}..: ${JSON.stringify(res)}`);
    }
    if (Number(res[0].baseOffset) !== expected) {
      throw new Error(`records ${start}.. acknowledged at base offset ${res[0].baseOffset}, expected ${expected}`);
    }
    expected += messages.length;
  }
  await producer.disconnect();
  log(`produced ${N} records (gzip, acks=-1), offsets 0..${N - 1} acknowledged`);
}

async function consume() {
  phase = 'consuming';
  const consumer = kafka.consumer({
    groupId: GROUP,
    sessionTimeout: 10000,
    rebalanceTimeout: 10000,
    heartbeatInterval: 1000,
    maxWaitTimeInMs: 500,
    retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2000 },
  });
  consumer.on(consumer.events.GROUP_JOIN, (e) => {
    groupJoined = true;
    log(`joined group ${GROUP} as ${e.payload.memberId}, assignment ${JSON.stringify(e.payload.memberAssignment)}`);
  });

  let done;
  let crashed;
  const finished = new Promise((resolve, reject) => {
    done = resolve;
    crashed = reject;
  });
  consumer.on(consumer.events.CRASH, (e) => {
    const err = e.payload.error;
    crashed(new Error(`consumer crashed (${err && err.name}): ${err && err.message}`));
  });

  await consumer.connect();
  await consumer.subscribe({ topics: [TOPIC], fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      for (const m of batch.messages) {
        const i = got;
        const off = Number(m.offset);
        if (batch.topic !== TOPIC || batch.partition !== 0 || off !== i) {
          crashed(new Error(`record #${i}: ${batch.topic}/${batch.partition} offset ${off}, expected ${TOPIC}/0 offset ${i}`));
          return;
        }
        const key = m.key === null ? 'null' : m.key.toString();
        const value = m.value === null ? 'null' : m.value.toString();
        if (key !== `k${i}`) {
          crashed(new Error(`record #${i}: key '${key}', expected 'k${i}'`));
          return;
        }
        if (value !== `${CLIENT}-${i}`) {
          crashed(new Error(`record #${i}: value '${value}', expected '${CLIENT}-${i}'`));
          return;
        }
        got++;
        if (got > N) {
          crashed(new Error('more records than produced'));
          return;
        }
      }
      if (got === N) done();
    },
  });
  await finished;
  // Nothing beyond N may show up.
  await new Promise((r) => setTimeout(r, 700));
  if (got !== N) throw new Error(`got ${got - N} unexpected extra records`);
  log(`consumed ${got} records from offset 0 via consumer group, all offsets/keys/values match`);
  // Disconnect (LeaveGroup) is not part of what is checked; do not let it hang.
  await Promise.race([consumer.disconnect(), new Promise((r) => setTimeout(r, 3000))]);
}

async function main() {
  const hard = setTimeout(() => fail(`timed out after ${TIMEOUT_S}s: ${describeStall()}`), DEADLINE - Date.now());
  log(`kafkajs ${kafkajsVersion}, bootstrap ${BOOTSTRAP} (${security.what}), topic ${TOPIC}`);
  await produce();
  await consume();
  clearTimeout(hard);
  process.stdout.write(`OK [${CLIENT}] ${N} records round-tripped in ${elapsed()}s\n`, () => process.exit(0));
}

main().catch((e) => fail(`${e.name || 'Error'}: ${e.message}${phase === 'consuming' && !groupJoined ? ` (${describeStall()})` : ''}`));
