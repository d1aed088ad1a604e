// Ferry's console in a real browser: Debian's headless Chromium driven by
// playwright-core, against a running broker (tests/console/run.sh starts
// it). Checks that the topics and the lag appear, that the lag chart
// follows a consumer's commits, and that Abort on an open transaction
// (after the confirmation) really aborts it in the broker.
//
// Env: FERRY_BOOTSTRAP, FERRY_HTTP (HOST:PORT each), CHROMIUM (default
// /usr/bin/chromium), SCREENSHOT_DIR (where console-*.png go).
"use strict";

const assert = require("node:assert/strict");
const path = require("node:path");
const { Kafka, logLevel } = require("kafkajs");
const { chromium } = require("playwright-core");

const BOOTSTRAP = process.env.FERRY_BOOTSTRAP;
const HTTP = "http://" + process.env.FERRY_HTTP;
const SHOTS = process.env.SCREENSHOT_DIR || path.join(__dirname, ".out");
const TOPIC = "orders", GROUP = "billing", TXN = "payments-1", TXN_TOPIC = "payments", BUSY = "clicks";

const sleep = ms => new Promise(r => setTimeout(r, ms));
const say = msg => console.log("console: " + msg);
const range = n => [...Array(n).keys()];

// Polls `fn` until it returns something truthy; fails with what it saw last.
async function until(what, fn, timeoutMs = 15000) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    await sleep(100);
  }
  throw new Error("timed out waiting for " + what + " (last: " + last + ")");
}

async function api(p) {
  const r = await fetch(HTTP + p);
  assert.equal(r.status, 200, p);
  return r.json();
}

// ---------------------------------------------------------------- Kafka side
async function setUp(kafka) {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ waitForLeaders: true, topics: [
    { topic: TOPIC, numPartitions: 2 }, { topic: TXN_TOPIC, numPartitions: 1 }, { topic: BUSY, numPartitions: 1 }] });
  await admin.disconnect();
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic: TOPIC, acks: -1,
    messages: range(200).map(i => ({ key: "k" + i, value: "order " + i, partition: i % 2 })) });
  return producer;
}

// A live member that never commits by itself: the test commits for it.
async function member(kafka) {
  const consumer = kafka.consumer({ groupId: GROUP, sessionTimeout: 30000 });
  const joined = new Promise(resolve => consumer.on(consumer.events.GROUP_JOIN, resolve));
  await consumer.connect();
  await consumer.subscribe({ topic: TOPIC, fromBeginning: true });
  await consumer.run({ autoCommit: false, eachMessage: async () => {} });
  await joined;
  return consumer;
}

const commit = (consumer, p0, p1) => consumer.commitOffsets([
  { topic: TOPIC, partition: 0, offset: String(p0) }, { topic: TOPIC, partition: 1, offset: String(p1) }]);

// Five records in a transaction left open.
async function openTransaction(kafka) {
  const producer = kafka.producer({ transactionalId: TXN, idempotent: true, maxInFlightRequests: 1, transactionTimeout: 600000 });
  await producer.connect();
  const txn = await producer.transaction();
  await txn.send({ topic: TXN_TOPIC, messages: range(5).map(i => ({ value: "payment " + i })) });
  return { producer, txn };
}

// Steady acks=all traffic elsewhere, so rates and fsync latency have data.
function background(producer) {
  let on = true;
  const loop = (async () => {
    for (let i = 0; on; i++) {
      await producer.send({ topic: BUSY, acks: -1, messages: range(20).map(j => ({ value: "click " + i + "-" + j })) });
      await sleep(100);
    }
  })();
  return async () => { on = false; await loop; };
}

// ---------------------------------------------------------------- browser side
async function checkTopicsAndLag(page) {
  const topic = page.locator('[data-testid=topic-row][data-topic="' + TOPIC + '"]');
  await topic.waitFor({ timeout: 15000 });
  const cells = await topic.locator("td").allTextContents();
  assert.equal(cells[1], "2", "partitions: " + cells);
  await until("a records/s rate on " + BUSY, async () => {
    const c = await page.locator('[data-testid=topic-row][data-topic="' + BUSY + '"] td').allTextContents();
    return /\/s$/.test(c[4]) && c[4] !== "0.0/s";
  });
  const group = page.locator('article[data-group="' + GROUP + '"]');
  await until("total lag 130", async () => (await group.locator("[data-testid=total-lag]").textContent()) === "130");
  const lags = await group.locator("[data-testid=lag]").allTextContents();
  assert.deepEqual(lags, ["60", "70"], "lag per partition");
  assert.match(await group.locator(".members").textContent(), /^1 member$/);
  const brokers = await page.locator("[data-testid=broker-row]").count();
  assert.equal(brokers, 1, "a single node shows as one broker");
  return group;
}

async function checkLagChartFollowsCommits(page, group, consumer) {
  const chart = group.locator("canvas[data-testid=lag-chart]");
  await until("a few lag samples", async () => Number(await chart.getAttribute("data-points")) >= 6);
  const before = { points: Number(await chart.getAttribute("data-points")), image: await chart.evaluate(c => c.toDataURL()) };
  assert.equal(await chart.getAttribute("data-last"), "130");
  await commit(consumer, 90, 100);
  await until("the chart at lag 10", async () => (await chart.getAttribute("data-last")) === "10");
  assert.equal(await group.locator("[data-testid=total-lag]").textContent(), "10");
  assert.deepEqual(await group.locator("[data-testid=lag]").allTextContents(), ["10", "0"]);
  await sleep(1200); // a few samples at the new lag, for the picture
  assert.ok(Number(await chart.getAttribute("data-points")) > before.points, "the chart gained samples");
  assert.notEqual(await chart.evaluate(c => c.toDataURL()), before.image, "the chart was redrawn");
}

async function abortFromThePage(page, txn) {
  const row = page.locator('[data-testid=txn-row][data-txn="' + TXN + '"]');
  await row.waitFor({ timeout: 15000 });
  assert.match(await row.textContent(), /payments-0: LSO 0, 5 records held back/);
  await page.screenshot({ path: path.join(SHOTS, "console.png"), fullPage: true });
  let asked = null;
  page.once("dialog", d => { asked = d.type() + ": " + d.message(); d.accept(); });
  await row.locator("[data-testid=abort]").click();
  await row.waitFor({ state: "detached", timeout: 15000 });
  assert.match(asked || "", /^confirm: Abort transaction payments-1\?/);
  assert.match(await page.locator("[data-testid=notice]").textContent(), /aborted/);
  const t = (await api("/api/transactions")).find(x => x.transactional_id === TXN);
  assert.equal(t.state, "CompleteAbort");
  const p = t.partitions[0];
  assert.equal(p.last_stable_offset, p.high_watermark, "the LSO is released");
  assert.equal(p.high_watermark, 6, "five records and the ABORT marker");
  await assert.rejects(txn.commit(), e => /fenced|epoch/i.test(String(e.type || "") + " " + e.message), "the producer is fenced");
}

// A read_committed reader gets nothing of the aborted transaction.
async function readCommitted(kafka) {
  const consumer = kafka.consumer({ groupId: "console-test-reader", readUncommitted: false });
  const got = [];
  await consumer.connect();
  await consumer.subscribe({ topic: TXN_TOPIC, fromBeginning: true });
  await consumer.run({ eachMessage: async ({ message }) => { got.push(String(message.value)); } });
  await sleep(3000);
  await consumer.disconnect();
  assert.deepEqual(got, [], "read_committed sees nothing aborted");
}

async function main() {
  assert.ok(BOOTSTRAP && process.env.FERRY_HTTP, "FERRY_BOOTSTRAP and FERRY_HTTP are required");
  const kafka = new Kafka({ clientId: "console-test", brokers: [BOOTSTRAP], logLevel: logLevel.NOTHING });
  const producer = await setUp(kafka);
  const stopBusy = background(producer);
  const consumer = await member(kafka);
  await commit(consumer, 40, 30);
  const { producer: txProducer, txn } = await openTransaction(kafka);
  say("records produced, offsets committed, a transaction left open");

  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true });
  const errors = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on("pageerror", e => errors.push(e.message));
    page.on("console", m => { if (m.type() === "error") errors.push(m.text()); });
    await page.goto(HTTP + "/?refresh=500");
    const group = await checkTopicsAndLag(page);
    say("topics, brokers and lag shown");
    await checkLagChartFollowsCommits(page, group, consumer);
    say("the lag chart followed a commit");
    assert.ok(Number(await page.locator("[data-testid=fsync-chart]").getAttribute("data-points")) > 0, "fsync samples");
    await group.screenshot({ path: path.join(SHOTS, "console-group.png") });
    await abortFromThePage(page, txn);
    say("Abort on the page aborted the transaction; its producer is fenced");
    assert.deepEqual(errors, [], "no errors in the page");
  } finally {
    await browser.close();
    await stopBusy();
    await Promise.allSettled([consumer.disconnect(), producer.disconnect(), txProducer.disconnect()]);
  }
  await readCommitted(kafka);
  say("read_committed reads nothing of it; all checks passed (screenshots in " + SHOTS + ")");
}

main().catch(e => { console.error("console: FAILED: " + (e && e.stack || e)); process.exit(1); });
