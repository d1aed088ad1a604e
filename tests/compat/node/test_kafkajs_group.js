#!/usr/bin/env node
// Ferry compatibility check: consumer groups with kafkajs.
//
// Usage: node test_kafkajs_group.js rebalance|kill
//
// Creates a 6-partition topic (admin.createTopics), produces 6,000 keyed
// records (acks=-1; each record's partition is the one kafkajs's
// DefaultPartitioner picks for its key, set explicitly so that offsets can be
// checked), then consumes them with a group of three kafkajs consumers in one
// process (autoCommit off): eachBatch processes the batch in chunks of 100
// (every value is recorded; a short sleep per record keeps the stream going
// long enough) and commits each chunk with consumer.commitOffsets
// (at-least-once).
//   - "rebalance": once 1,500 distinct values are processed, member m1
//     disconnects (LeaveGroup) and a new member m4 joins; m4 must process records.
//   - "kill": once 2,000 distinct values are processed and every partition has
//     an acknowledged commit, the program asks the runner (run.sh, via
//     $FERRY_CONTROL_DIR) to SIGKILL and restart the broker and keeps
//     consuming. Right after the restart the group's committed offsets must be
//     at least the commits acknowledged before the kill, and no record below
//     such a commit may be processed again after the restart.
// Both: every value processed at least once, committed offsets == log end offsets.
//
// Env: FERRY_BOOTSTRAP (default 127.0.0.1:9092), FERRY_COMPAT_TIMEOUT (s, default 60),
// FERRY_CONTROL_DIR (set by run.sh; needed for "kill"),
// FERRY_COMPAT_LOGLEVEL=debug|info|warn|error (kafkajs log level, default warn).
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { Kafka, logLevel, Partitioners } = require('kafkajs');
const kafkajsVersion = require('kafkajs/package.json').version;

const CLIENT = 'kafkajs';
const N = 6000;
const PARTITIONS = 6;
const CHUNK = 100;
// Per record: three members process ~750 records/s in total, so the stream
// lasts ~8 s plus rebalances.
const PROCESS_DELAY_MS = 4;
const LEAVE_AT = 1500;
const KILL_AT = 2000;
// The broker (like Kafka) refuses session timeouts below
// group.min.session.timeout.ms (6000 ms by default).
const SESSION_TIMEOUT_MS = 10000;
const HEARTBEAT_INTERVAL_MS = 1000;
const REBALANCE_TIMEOUT_MS = 30000;

const MODE = process.argv[2] || 'rebalance';
const BOOTSTRAP = process.env.FERRY_BOOTSTRAP || '127.0.0.1:9092';
const TIMEOUT_S = Number(process.env.FERRY_COMPAT_TIMEOUT || '60');
const TOPIC = `compat-${CLIENT}-g${MODE[0]}-${crypto.randomBytes(5).toString('hex')}`;
const GROUP = `${TOPIC}-g`;
const START = Date.now();
const DEADLINE = START + TIMEOUT_S * 1000;

let phase = 'starting';

// The ledger.
const prodPartition = new Array(N).fill(-1);
const prodOffset = new Array(N).fill(-1);
const leo = new Array(PARTITIONS).fill(0);
const counts = new Array(N).fill(0);
let unique = 0;
let redelivered = 0;
const perMember = {};
const acked = new Array(PARTITIONS).fill(0);
let commitOk = 0;
let commitFailed = 0;
let killPhase = 'before';
let floor = null;
const firstAfter = new Array(PARTITIONS).fill(-1);
const violations = [];
const members = [];

function elapsed() {
  return ((Date.now() - START) / 1000).toFixed(2);
}

function log(msg) {
  process.stdout.write(`[${CLIENT} ${elapsed().padStart(6)}s] ${msg}\n`);
}

function fail(msg) {
  process.stderr.write(`FAIL [${CLIENT}] topic=${TOPIC} group=${GROUP}: ${msg}\n`, () => process.exit(1));
  setTimeout(() => process.exit(1), 500).unref();
  throw new Error(`failed: ${msg}`);
}

function progress() {
  const missing = [];
  for (let i = 0; i < N && missing.length < 5; i++) if (counts[i] === 0) missing.push(i);
  return `${unique}/${N} values processed, missing e.g. ${JSON.stringify(missing)}, acked commits ` +
    `${JSON.stringify(acked)}, log end ${JSON.stringify(leo)}, per member ${JSON.stringify(perMember)}`;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const levelName = (process.env.FERRY_COMPAT_LOGLEVEL || 'warn').toUpperCase();
const kafka = new Kafka({
  clientId: 'ferry-compat-kafkajs',
  brokers: BOOTSTRAP.split(','),
  logLevel: logLevel[levelName] !== undefined ? logLevel[levelName] : logLevel.WARN,
  connectionTimeout: 5000,
  requestTimeout: 15000,
  retry: { retries: 10, initialRetryTime: 200, maxRetryTime: 2000 },
});

// ------------------------------------------------------------------ admin

async function createTopic(admin) {
  const created = await admin.createTopics({
    topics: [{ topic: TOPIC, numPartitions: PARTITIONS, replicationFactor: 1 }],
    waitForLeaders: true,
    timeout: 10000,
  });
  if (!created) fail(`createTopics: topic ${TOPIC} already existed`);
  log(`created topic ${TOPIC} with ${PARTITIONS} partitions (CreateTopics)`);
}

async function committed(admin) {
  const res = await admin.fetchOffsets({ groupId: GROUP, topics: [TOPIC] });
  const out = new Array(PARTITIONS).fill(-1);
  for (const t of res) {
    if (t.topic !== TOPIC) continue;
    for (const p of t.partitions) out[p.partition] = Number(p.offset);
  }
  return out;
}

async function endOffsets(admin) {
  const out = new Array(PARTITIONS).fill(-1);
  for (const p of await admin.fetchTopicOffsets(TOPIC)) out[p.partition] = Number(p.high);
  return out;
}

// ------------------------------------------------------------------ produce

async function produce() {
  const producer = kafka.producer({ idempotent: false, createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const partitioner = Partitioners.DefaultPartitioner();
  const partitionMetadata = [];
  for (let p = 0; p < PARTITIONS; p++) partitionMetadata.push({ partitionId: p, leader: 1 });
  const BATCH = 1000;
  for (let start = 0; start < N; start += BATCH) {
    const messages = [];
    const byPartition = new Map();
    for (let i = start; i < Math.min(start + BATCH, N); i++) {
      const key = Buffer.from(`k${i}`);
      const partition = partitioner({ topic: TOPIC, partitionMetadata, message: { key } });
      messages.push({ key, value: `${CLIENT}-${i}`, partition });
      if (!byPartition.has(partition)) byPartition.set(partition, []);
      byPartition.get(partition).push(i);
    }
    const res = await producer.send({ topic: TOPIC, acks: -1, messages });
    for (const r of res) {
      if (r.errorCode !== 0) fail(`produce error on partition ${r.partition}: ${JSON.stringify(r)}`);
      const idx = byPartition.get(r.partition) || [];
      idx.forEach((i, j) => {
        prodPartition[i] = r.partition;
        prodOffset[i] = Number(r.baseOffset) + j;
      });
      byPartition.delete(r.partition);
    }
    if (byPartition.size !== 0) fail(`no produce response for partitions ${[...byPartition.keys()]}`);
  }
  await producer.disconnect();
  const offs = Array.from({ length: PARTITIONS }, () => []);
  for (let i = 0; i < N; i++) offs[prodPartition[i]].push(prodOffset[i]);
  for (let p = 0; p < PARTITIONS; p++) {
    offs[p].sort((a, b) => a - b);
    if (offs[p].length === 0) fail(`records not spread over all partitions: partition ${p} got none`);
    offs[p].forEach((o, j) => {
      if (o !== j) fail(`partition ${p}: acknowledged offsets are not 0..${offs[p].length - 1}`);
    });
    leo[p] = offs[p].length;
  }
  log(`produced ${N} keyed records over ${PARTITIONS} partitions: ${JSON.stringify(leo)}`);
}

// ------------------------------------------------------------------ ledger

function processRecord(member, partition, offset, key, value) {
  const v = value === null ? 'null' : value.toString();
  const k = key === null ? 'null' : key.toString();
  const i = Number(v.slice(v.lastIndexOf('-') + 1));
  if (!Number.isInteger(i) || i < 0 || i >= N || v !== `${CLIENT}-${i}` || k !== `k${i}`) {
    fail(`${member}: record ${partition}/${offset} key='${k}' value='${v}'`);
  }
  if (prodPartition[i] !== partition || prodOffset[i] !== offset) {
    fail(`${member}: value #${i} read at ${partition}/${offset}, produced at ${prodPartition[i]}/${prodOffset[i]}`);
  }
  if (counts[i] === 0) unique++;
  else redelivered++;
  counts[i]++;
  perMember[member] = (perMember[member] || 0) + 1;
  if (killPhase === 'after') {
    if (firstAfter[partition] < 0) firstAfter[partition] = offset;
    if (offset < floor[partition]) violations.push(`${member} ${partition}/${offset} < ${floor[partition]}`);
  }
}

// ------------------------------------------------------------------ members

async function startMember(name) {
  const m = { name, error: null, consumer: null };
  members.push(m);
  const consumer = kafka.consumer({
    groupId: GROUP,
    sessionTimeout: SESSION_TIMEOUT_MS,
    rebalanceTimeout: REBALANCE_TIMEOUT_MS,
    heartbeatInterval: HEARTBEAT_INTERVAL_MS,
    maxWaitTimeInMs: 300,
    retry: { retries: 10, initialRetryTime: 200, maxRetryTime: 2000 },
  });
  m.consumer = consumer;
  consumer.on(consumer.events.GROUP_JOIN, (e) => {
    const a = e.payload.memberAssignment[TOPIC] || [];
    log(`${name}: joined generation, assigned ${JSON.stringify([...a].sort((x, y) => x - y))}`);
  });
  consumer.on(consumer.events.CRASH, (e) => {
    const err = e.payload.error;
    log(`${name}: consumer crashed (${err && err.name}: ${err && err.message}), restart: ${e.payload.restart}`);
    if (!e.payload.restart) m.error = `crashed without restart: ${err && err.name}: ${err && err.message}`;
  });
  await consumer.connect();
  await consumer.subscribe({ topics: [TOPIC], fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachBatchAutoResolve: false,
    eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
      const msgs = batch.messages;
      for (let s = 0; s < msgs.length; s += CHUNK) {
        if (!isRunning() || isStale()) return;
        const chunk = msgs.slice(s, s + CHUNK);
        for (const msg of chunk) processRecord(name, batch.partition, Number(msg.offset), msg.key, msg.value);
        await sleep(PROCESS_DELAY_MS * chunk.length);
        const last = Number(chunk[chunk.length - 1].offset);
        resolveOffset(chunk[chunk.length - 1].offset);
        try {
          // commitOffsets returns without sending anything (and swallows
          // errors) once the consumer is no longer running, e.g. after
          // disconnect(): count a commit as acknowledged only if the consumer
          // was running before and after it.
          const wasRunning = isRunning();
          await consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: String(last + 1) }]);
          if (!wasRunning || !isRunning()) return;
          commitOk++;
          acked[batch.partition] = Math.max(acked[batch.partition], last + 1);
        } catch (e) {
          commitFailed++;
          if (commitFailed <= 10) {
            log(`${name}: commit failed (tolerated, records will be re-delivered): ${e.name}: ${e.message}`);
          }
          return; // let the consumer rejoin / refetch
        }
        await heartbeat();
      }
    },
  });
  return m;
}

async function stopMember(m) {
  const t = setTimeout(() => fail(`member ${m.name} did not disconnect within 20 s`), 20000);
  await m.consumer.disconnect();
  clearTimeout(t);
  m.stopped = true;
}

async function waitUntil(what, cond) {
  while (!cond()) {
    if (Date.now() > DEADLINE) fail(`timed out waiting for ${what} (${progress()})`);
    checkMembers();
    await sleep(50);
  }
}

function checkMembers() {
  for (const m of members) if (m.error) fail(`member ${m.name} died: ${m.error}`);
}

// ------------------------------------------------------------------ broker kill

async function requestKill() {
  const ctl = process.env.FERRY_CONTROL_DIR;
  if (!ctl || !fs.existsSync(ctl)) fail("mode 'kill' needs FERRY_CONTROL_DIR (run it through tests/compat/run.sh)");
  const done = path.join(ctl, 'kill-done');
  const failed = path.join(ctl, 'kill-failed');
  for (const f of [done, failed]) if (fs.existsSync(f)) fs.unlinkSync(f);
  const tmp = path.join(ctl, `.kill-request.${process.pid}`);
  fs.writeFileSync(tmp, `${CLIENT}\n`);
  fs.renameSync(tmp, path.join(ctl, 'kill-request'));
  killPhase = 'during';
  log(`asked the runner to SIGKILL and restart the broker; acknowledged commits so far ${JSON.stringify(acked)}`);
  const until = Date.now() + 30000;
  while (!fs.existsSync(done)) {
    if (fs.existsSync(failed)) fail(`runner could not restart the broker: ${fs.readFileSync(failed, 'utf8').trim()}`);
    if (Date.now() > until || Date.now() > DEADLINE) fail('runner did not report kill-done within 30 s');
    await sleep(20);
  }
  killPhase = 'after';
  floor = [...acked];
  log(`broker killed and restarted (${fs.readFileSync(done, 'utf8').trim()}); commits acknowledged before the ` +
    `restart: ${JSON.stringify(floor)}`);
}

// ------------------------------------------------------------------ scenario

async function main() {
  if (MODE !== 'rebalance' && MODE !== 'kill') {
    process.stderr.write('usage: test_kafkajs_group.js rebalance|kill\n');
    process.exit(2);
  }
  setTimeout(() => fail(`hard timeout after ${TIMEOUT_S}s (phase: ${phase}; ${progress()})`), TIMEOUT_S * 1000 + 5000).unref();
  log(`kafkajs ${kafkajsVersion}, bootstrap ${BOOTSTRAP}, mode ${MODE}, topic ${TOPIC}`);
  const admin = kafka.admin();
  await admin.connect();
  phase = 'creating topic';
  await createTopic(admin);
  phase = 'producing';
  await produce();
  const end = await endOffsets(admin);
  if (JSON.stringify(end) !== JSON.stringify(leo)) {
    fail(`log end offsets ${JSON.stringify(end)} differ from acknowledged counts ${JSON.stringify(leo)}`);
  }

  phase = 'consuming with m1, m2, m3';
  await Promise.all(['m1', 'm2', 'm3'].map(startMember));
  if (MODE === 'rebalance') {
    await waitUntil(`${LEAVE_AT} processed values`, () => unique >= LEAVE_AT);
    phase = 'm1 leaving';
    log(`${unique} values processed; m1 leaves the group (disconnect)`);
    await stopMember(members[0]);
    log(`m1 disconnected after ${perMember.m1 || 0} records; m4 joins`);
    phase = 'consuming with m2, m3, m4';
    await startMember('m4');
  } else {
    await waitUntil(`${KILL_AT} processed values and a commit on every partition`,
      () => unique >= KILL_AT && Math.min(...acked) > 0);
    phase = 'broker kill/restart';
    await requestKill();
    phase = 'checking committed offsets after the restart';
    let got = null;
    let lastErr = null;
    const until = Date.now() + 15000;
    while (got === null && Date.now() < until) {
      try {
        got = await committed(admin);
      } catch (e) {
        lastErr = e;
        await sleep(200);
      }
    }
    if (got === null) fail(`could not fetch committed offsets after the restart: ${lastErr}`);
    const lost = [];
    for (let p = 0; p < PARTITIONS; p++) {
      if (got[p] < floor[p]) lost.push(`${p}: now ${got[p]}, acknowledged ${floor[p]}`);
    }
    if (lost.length) {
      fail(`after the restart the group's committed offsets ${JSON.stringify(got)} are below commits the broker ` +
        `acknowledged before it was killed ${JSON.stringify(floor)}: ${lost.join('; ')}`);
    }
    log(`committed offsets right after the restart: ${JSON.stringify(got)} (>= acknowledged before the kill)`);
    phase = 'consuming after the restart';
  }

  await waitUntil(`all ${N} values processed`, () => unique >= N);
  log(`all ${N} values processed (${redelivered} re-deliveries); waiting for final commits`);
  phase = 'waiting for committed == log end';
  let last = '';
  for (;;) {
    try {
      const c = await committed(admin);
      if (JSON.stringify(c) === JSON.stringify(leo)) break;
      last = JSON.stringify(c);
    } catch (e) {
      last = String(e);
    }
    if (Date.now() > DEADLINE) fail(`committed offsets ${last} never reached the log end offsets ${JSON.stringify(leo)}`);
    checkMembers();
    await sleep(200);
  }

  phase = 'closing members';
  for (const m of members) if (!m.stopped) await stopMember(m);
  const fin = await committed(admin);
  if (JSON.stringify(fin) !== JSON.stringify(leo)) {
    fail(`after closing the members the committed offsets are ${JSON.stringify(fin)}, log end ${JSON.stringify(leo)}`);
  }
  log(`committed offsets == log end offsets ${JSON.stringify(leo)} (commits: ${commitOk} acknowledged, ` +
    `${commitFailed} failed and retried)`);
  for (let i = 0; i < N; i++) if (counts[i] === 0) fail(`value #${i} never processed`);
  if (MODE === 'rebalance') {
    if (!perMember.m4) fail(`new member m4 never processed a record (per member ${JSON.stringify(perMember)})`);
  } else {
    if (violations.length) {
      fail(`${violations.length} records below a commit acknowledged before the restart were processed again after ` +
        `it (member partition/offset < acknowledged commit): ${violations.slice(0, 5).join(', ')}`);
    }
    log(`first offsets processed after the restart per partition: ${JSON.stringify(firstAfter)} ` +
      `(commits acknowledged before it: ${JSON.stringify(floor)})`);
  }
  log(`per member: ${JSON.stringify(perMember)}, ${redelivered} re-deliveries`);
  await Promise.race([admin.disconnect(), sleep(3000)]);
  process.stdout.write(`OK [${CLIENT}] group ${MODE}: ${N} records processed at least once, commits at log end, ` +
    `in ${elapsed()}s\n`, () => process.exit(0));
}

main().catch((e) => {
  if (!String(e.message).startsWith('failed: ')) fail(`${e.name || 'Error'} (phase ${phase}): ${e.message}`);
});
