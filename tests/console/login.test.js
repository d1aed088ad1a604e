// The console with ACLs on (`--acls-enable true`), in headless Chromium:
// without a login the page is refused (401, the browser's login prompt);
// logged in as a user who may DESCRIBE one topic and not the cluster, the
// page shows that topic alone and says why the cluster panels are hidden.
//
// Env: FERRY_BOOTSTRAP (a PLAINTEXT listener whose anonymous principal is a
// super user), FERRY_HTTP, FERRY_LOGIN_USER, FERRY_LOGIN_PASSWORD, CHROMIUM.
"use strict";

const assert = require("node:assert/strict");
const { Kafka, logLevel } = require("kafkajs");
const { chromium } = require("playwright-core");

const HTTP = "http://" + process.env.FERRY_HTTP;
const say = msg => console.log("console login: " + msg);

async function main() {
  const kafka = new Kafka({ clientId: "console-login-test", brokers: [process.env.FERRY_BOOTSTRAP], logLevel: logLevel.NOTHING });
  const producer = kafka.producer();
  await producer.connect();
  for (const topic of ["public", "private"]) await producer.send({ topic, acks: -1, messages: [{ value: "v" }] });
  await producer.disconnect();

  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true });
  try {
    // What the browser gets before it shows its login prompt (headless
    // Chromium turns the prompt itself into a failed navigation).
    const refused = await fetch(HTTP + "/");
    assert.equal(refused.status, 401, "the console without a login");
    assert.match(refused.headers.get("www-authenticate") || "", /^Basic /, "a Basic challenge: the browser asks for a login");
    const basic = pw => "Basic " + Buffer.from(process.env.FERRY_LOGIN_USER + ":" + pw).toString("base64");
    assert.equal((await fetch(HTTP + "/", { headers: { authorization: basic("wrong") } })).status, 401, "a wrong password");
    say("refused without a login and with a wrong password");

    const user = await browser.newContext({
      httpCredentials: { username: process.env.FERRY_LOGIN_USER, password: process.env.FERRY_LOGIN_PASSWORD } });
    const page = await user.newPage();
    const errors = [];
    page.on("pageerror", e => errors.push(e.message));
    assert.equal((await page.goto(HTTP + "/?refresh=500")).status(), 200, "the console after the login");
    await page.locator("[data-testid=topic-row][data-topic=public]").waitFor({ timeout: 15000 });
    assert.equal(await page.locator("[data-testid=topic-row][data-topic=private]").count(), 0, "a topic the user may not describe is not shown");
    assert.ok(await page.locator("#brokers-section").isHidden(), "the brokers panel needs DESCRIBE on the cluster");
    assert.match(await page.locator("[data-testid=notice]").textContent(), /DESCRIBE on the cluster/);
    assert.match(await page.locator("[data-testid=status]").textContent(), /^Updated/, "the rest of the page refreshes");
    assert.deepEqual(errors, [], "no errors in the page");
    say("logged in, the page shows only what the user may describe");
  } finally {
    await browser.close();
  }
}

main().catch(e => { console.error("console login: FAILED: " + (e && e.stack || e)); process.exit(1); });
