// Ferry compatibility check: kafkajs with a wrong SASL password is refused
// with an authentication error (KafkaJSSASLAuthenticationError), not a
// timeout or a connection error.
//
// Env: FERRY_BOOTSTRAP (a SASL listener), FERRY_CLIENT_PROPS (Kafka's names:
// security.protocol, sasl.mechanism, sasl.username, sasl.password with the
// right password, which this check spoils; ssl.ca.location).
'use strict';

const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

const props = {};
for (const kv of (process.env.FERRY_CLIENT_PROPS || '').split(/\s+/).filter(Boolean)) {
  const i = kv.indexOf('=');
  props[kv.slice(0, i)] = kv.slice(i + 1);
}
const ca = props['ssl.ca.location'];
const kafka = new Kafka({
  clientId: 'kafkajs-sasl-refused',
  brokers: [process.env.FERRY_BOOTSTRAP || '127.0.0.1:9092'],
  ssl: (props['security.protocol'] || '').toUpperCase().endsWith('SSL') ? (ca ? { ca: [fs.readFileSync(ca, 'utf8')] } : true) : undefined,
  sasl: { mechanism: (props['sasl.mechanism'] || '').toLowerCase(), username: props['sasl.username'], password: `${props['sasl.password']}-wrong` },
  retry: { retries: 0 },
  logLevel: logLevel.NOTHING,
});

async function main() {
  const producer = kafka.producer();
  const started = Date.now();
  try {
    await producer.connect();
  } catch (e) {
    if (e.name === 'KafkaJSSASLAuthenticationError') {
      console.log(`[kafkajs-sasl-refused] wrong password refused after ${((Date.now() - started) / 1000).toFixed(1)}s: ${e.message}`);
      console.log('[kafkajs-sasl-refused] OK');
      return;
    }
    throw new Error(`${e.name}: ${e.message} instead of an authentication error`);
  }
  await producer.disconnect();
  throw new Error('the producer connected with a wrong password');
}

main().catch((e) => {
  console.log(`[kafkajs-sasl-refused] FAILED: ${e.message}`);
  process.exit(1);
});
