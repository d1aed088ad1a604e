// Ferry's console: polls the JSON API, keeps a short history in memory for
// rates and charts, and draws everything itself (no libraries: the page is
// built into the binary and must work on a host without internet).
"use strict";

// ?refresh=500 polls faster (the browser test uses it); never below 250 ms.
const PERIOD_MS = Math.max(250, Number(new URLSearchParams(location.search).get("refresh")) || 2000);
// Samples kept per chart: 5 minutes at the default period.
const HISTORY = 150;
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

const state = {
  prevTopics: null,   // { at, counts: Map(topic → {records_in, bytes_in, bytes_out}) }
  lag: new Map(),     // group → [{ at, total, parts: Map("topic-p" → lag) }]
  prevFsync: null,    // { at, snapshot }
  fsync: [],          // [{ at, p50, p99, rate }]
};

// ---------------------------------------------------------------- helpers
// Cells are filled with textContent only: names come from clients.
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
// A cell is a value (numbers right-aligned), num(text) (a formatted
// number, right-aligned), or a DOM node.
function num(text) { return { num: text }; }
function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    if (c instanceof Node) { const td = el("td"); td.appendChild(c); tr.appendChild(td); continue; }
    if (c !== null && typeof c === "object") { tr.appendChild(el("td", c.num === null ? "—" : c.num, "n")); continue; }
    tr.appendChild(el("td", c === null || c === undefined ? "—" : c, typeof c === "number" ? "n" : ""));
  }
  return tr;
}
function fillTable(id, rows, empty) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows);
  if (rows.length === 0) body.appendChild(row([empty || "none"]));
}
function bytes(n) {
  if (n === null || n === undefined) return null;
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i === 0 ? String(Math.round(n)) : n.toFixed(1)) + " " + units[i];
}
function rate(n, unit) {
  if (n === null) return null;
  if (unit === "B") return bytes(n) + "/s";
  return (n >= 100 ? Math.round(n) : n.toFixed(1)) + "/s";
}
function seconds(ms) { return ms === null ? null : (ms / 1000).toFixed(1) + " s"; }
function duration(s) {
  if (s === null || !isFinite(s)) return "—";
  return s < 0.001 ? (s * 1e6).toFixed(0) + " µs" : s < 1 ? (s * 1e3).toFixed(2) + " ms" : s.toFixed(2) + " s";
}
function push(list, item) { list.push(item); if (list.length > HISTORY) list.shift(); }
async function get(path) {
  const r = await fetch(path, { cache: "no-store" });
  // With ACLs on, a user who may not DESCRIBE the cluster gets 403 for the
  // cluster-wide panels: they say so, the rest of the page still works.
  if (r.status === 403) return null;
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}
function hidden(id, text) {
  const section = document.getElementById(id);
  section.hidden = true;
  document.getElementById("notice").textContent = text;
}

// ---------------------------------------------------------------- charts
// 1, 2 or 5 times a power of ten, at least `v`: round axis labels.
function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  return [1, 2, 5, 10].map(m => m * p).find(c => c >= v);
}

// Lines on a canvas, one per series ({label, values}, null = gap), sample
// index on x, 0 to a round maximum on y; `span` (ms) labels the x axis.
// data-points = samples drawn.
function drawChart(canvas, series, fmt, span) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 70, R = 10, T = 22, B = 20;
  ctx.clearRect(0, 0, W, H);
  const n = Math.max(0, ...series.map(s => s.values.length));
  const seen = series.flatMap(s => s.values.filter(v => v !== null));
  const top = niceCeil(Math.max(1e-6, ...seen));
  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = T + (H - T - B) * i / 4;
    ctx.strokeStyle = "#e5e7eb"; ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(W - R, y); ctx.stroke();
    ctx.fillStyle = "#6b7280"; ctx.fillText(fmt(top * (4 - i) / 4), 4, y + 4);
  }
  const x = i => L + (n <= 1 ? (W - L - R) : (W - L - R) * i / (n - 1));
  const y = v => T + (H - T - B) * (1 - v / top);
  let legendX = L;
  series.forEach((s, k) => {
    const color = COLORS[k % COLORS.length];
    ctx.strokeStyle = color; ctx.fillStyle = color; ctx.lineWidth = 2;
    ctx.beginPath();
    let pen = false;
    s.values.forEach((v, i) => {
      if (v === null) { pen = false; return; }
      if (pen) ctx.lineTo(x(i), y(v)); else ctx.moveTo(x(i), y(v));
      pen = true;
    });
    ctx.stroke();
    ctx.fillText("— " + s.label, legendX, 12);
    legendX += ctx.measureText("— " + s.label).width + 14;
  });
  ctx.fillStyle = "#6b7280";
  if (n === 0) ctx.fillText("waiting for data…", L + 8, T + 20);
  if (n > 1) {
    const label = "last " + Math.round(span / 1000) + " s";
    ctx.fillText(label, W - R - ctx.measureText(label).width, H - 4);
  }
  canvas.dataset.points = String(n);
}

// ---------------------------------------------------------------- sections
function renderCluster(c) {
  if (c === null) return hidden("brokers-section", "Brokers and fsync latency need DESCRIBE on the cluster.");
  document.getElementById("cluster-mode").textContent = c.mode === "cluster"
    ? "cluster of " + c.brokers.length + ", answered by node " + c.node_id : "single node";
  const led = new Map();
  for (const p of c.partitions) if (p.leader !== null) led.set(p.leader, (led.get(p.leader) || 0) + 1);
  const rows = c.brokers.map(b => {
    const roles = [];
    if (b.node_id === c.controller_id) roles.push("controller");
    if (b.node_id === c.node_id) roles.push("this broker");
    const tr = row([b.node_id, b.host + ":" + b.port, roles.join(", ") || "broker", led.get(b.node_id) || 0]);
    tr.dataset.testid = "broker-row";
    tr.dataset.node = String(b.node_id);
    return tr;
  });
  fillTable("brokers", rows, "no broker registered yet");
}

function renderTopics(topics, cluster) {
  const now = performance.now(), prev = state.prevTopics;
  const dt = prev ? (now - prev.at) / 1000 : 0;
  const rows = topics.map(t => {
    const sized = t.partitions.filter(p => p.size_bytes !== null);
    const size = sized.length ? sized.reduce((a, p) => a + p.size_bytes, 0) : null;
    const before = prev && prev.counts.get(t.name);
    const r = k => (before && dt > 0 ? Math.max(0, t[k] - before[k]) / dt : null);
    const tr = row([t.name, t.partitions.length, t.storage, num(bytes(size)), num(rate(r("records_in"))),
      num(rate(r("bytes_in"), "B")), num(rate(r("bytes_out"), "B"))]);
    tr.dataset.testid = "topic-row";
    tr.dataset.topic = t.name;
    return tr;
  });
  state.prevTopics = { at: now, counts: new Map(topics.map(t => [t.name, t])) };
  fillTable("topics", rows);
  const placed = new Map((cluster ? cluster.partitions : []).map(p => [p.topic + "\u0000" + p.partition, p]));
  fillTable("partitions", topics.flatMap(t => t.partitions.map(p => {
    const c = placed.get(t.name + "\u0000" + p.partition);
    const inSync = c ? c.in_sync_replicas.length + "/" + c.replicas.length : null;
    const tr = row([t.name, p.partition, c ? c.leader : null, p.log_start_offset, p.log_end_offset,
      p.last_stable_offset, num(bytes(p.size_bytes)), inSync]);
    if (c && c.under_replicated) tr.classList.add("warn");
    return tr;
  })));
}

// One <article> per group, kept across polls (found by data-group, not a
// CSS selector: group ids may hold any character).
function groupArticle(box, id) {
  for (const a of box.children) if (a.dataset.group === id) return a;
  const art = document.getElementById("group-template").content.firstElementChild.cloneNode(true);
  art.dataset.group = id;
  art.querySelector(".lag-chart").dataset.group = id;
  box.appendChild(art);
  return art;
}

function fillGroup(art, g) {
  art.querySelector(".group-id").textContent = g.group_id;
  const badge = art.querySelector(".state");
  badge.textContent = g.state;
  badge.className = "badge state " + g.state;
  const members = art.querySelector(".members");
  members.textContent = g.members.length + (g.members.length === 1 ? " member" : " members");
  members.title = g.members.map(m => m.client_id + " @ " + m.client_host).join("\n");
  const rows = g.offsets.map(o => {
    const tr = row([o.topic, o.partition, o.committed_offset, o.high_watermark, o.lag]);
    tr.dataset.testid = "lag-row";
    tr.dataset.topic = o.topic;
    tr.dataset.partition = String(o.partition);
    tr.lastChild.dataset.testid = "lag";
    return tr;
  });
  const body = art.querySelector(".offsets tbody");
  body.replaceChildren(...rows);
  if (rows.length === 0) body.appendChild(row(["no committed offsets"]));
}

// The lag chart: one line per partition, plus their total when several.
function drawLag(art, hist, total) {
  const keys = [...new Set(hist.flatMap(s => [...s.parts.keys()]))].sort();
  const series = keys.map(k => ({ label: k, values: hist.map(s => (s.parts.has(k) ? s.parts.get(k) : null)) }));
  if (keys.length > 1) series.unshift({ label: "total", values: hist.map(s => s.total) });
  const canvas = art.querySelector(".lag-chart");
  drawChart(canvas, series, v => String(Math.round(v)), hist[hist.length - 1].at - hist[0].at);
  canvas.dataset.last = String(total);
  art.querySelector(".total-lag").textContent = String(total);
}

function renderGroups(groups) {
  const box = document.getElementById("groups");
  for (const c of [...box.children]) if (c.tagName !== "ARTICLE") c.remove();
  const now = Date.now(), seen = new Set();
  for (const g of groups) {
    seen.add(g.group_id);
    const art = groupArticle(box, g.group_id);
    fillGroup(art, g);
    const parts = new Map(g.offsets.filter(o => o.lag !== null).map(o => [o.topic + "-" + o.partition, o.lag]));
    const total = [...parts.values()].reduce((a, b) => a + b, 0);
    const hist = state.lag.get(g.group_id) || [];
    push(hist, { at: now, total, parts });
    state.lag.set(g.group_id, hist);
    drawLag(art, hist, total);
  }
  for (const art of [...box.children]) {
    if (!seen.has(art.dataset.group)) { art.remove(); state.lag.delete(art.dataset.group); }
  }
  if (groups.length === 0) box.appendChild(el("p", "none", "muted"));
}

// ---------------------------------------------------------------- transactions
const OPEN = new Set(["Ongoing", "PrepareCommit", "PrepareAbort", "PrepareEpochFence"]);

function heldBack(t) {
  const box = el("div");
  for (const p of t.partitions) {
    const held = p.high_watermark !== null && p.last_stable_offset !== null ? p.high_watermark - p.last_stable_offset : null;
    const line = el("div", p.topic + "-" + p.partition + ": LSO " + (p.last_stable_offset ?? "—") +
      (held === null ? "" : ", " + held + " record" + (held === 1 ? "" : "s") + " held back"));
    line.dataset.testid = "txn-partition";
    box.appendChild(line);
  }
  if (t.partitions.length === 0) box.textContent = "none yet";
  return box;
}

function renderTxns(txns) {
  const open = txns.filter(t => OPEN.has(t.state));
  document.getElementById("txn-summary").textContent =
    open.length + " open; " + (txns.length - open.length) + " transactional ids idle or completed";
  const rows = open.map(t => {
    const button = el("button", "Abort", "abort");
    button.dataset.testid = "abort";
    button.dataset.txn = t.transactional_id;
    button.disabled = t.state !== "Ongoing";
    button.addEventListener("click", () => abortTxn(t.transactional_id, button));
    const tr = row([t.transactional_id, t.producer_id + " / epoch " + t.producer_epoch, t.state,
      num(t.age_ms === null ? null : seconds(t.age_ms)), heldBack(t), button]);
    tr.dataset.testid = "txn-row";
    tr.dataset.txn = t.transactional_id;
    return tr;
  });
  fillTable("transactions", rows, "no open transactions");
}

async function abortTxn(id, button) {
  const question = "Abort transaction " + id + "?\n\nIts producer is fenced and everything it wrote " +
    "in this transaction is discarded; read_committed consumers move on.";
  if (!confirm(question)) return;
  button.disabled = true;
  try {
    const r = await fetch("/api/transactions/" + encodeURIComponent(id) + "/abort", { method: "POST" });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || "HTTP " + r.status);
    notice("Transaction " + id + " aborted; its producer is fenced.", false);
  } catch (e) {
    notice("Aborting " + id + " failed: " + e.message, true);
    button.disabled = false;
  }
  refresh();
}

// ---------------------------------------------------------------- fsync
// Prometheus's histogram_quantile on cumulative bucket deltas: linear
// inside the bucket the rank falls in; +Inf answers the last finite bound.
function quantile(buckets, total, q) {
  const rank = q * total;
  let prevLe = 0, prevCount = 0;
  for (const b of buckets) {
    if (b.count >= rank) {
      if (b.le === null) return prevLe;
      const span = b.count - prevCount;
      return span > 0 ? prevLe + (b.le - prevLe) * (rank - prevCount) / span : b.le;
    }
    prevLe = b.le ?? prevLe;
    prevCount = b.count;
  }
  return prevLe;
}

function renderFsync(snap) {
  if (snap === null) return hidden("fsync-section", "Brokers and fsync latency need DESCRIBE on the cluster.");
  const now = performance.now(), prev = state.prevFsync;
  state.prevFsync = { at: now, snap };
  if (prev) {
    const n = snap.count - prev.snap.count;
    const d = snap.buckets.map((b, i) => ({ le: b.le, count: b.count - (prev.snap.buckets[i] ? prev.snap.buckets[i].count : 0) }));
    push(state.fsync, { at: now, p50: n > 0 ? quantile(d, n, 0.5) : null, p99: n > 0 ? quantile(d, n, 0.99) : null,
      rate: n / ((now - prev.at) / 1000) });
  }
  const last = state.fsync[state.fsync.length - 1];
  document.getElementById("fsync-summary").textContent = (last ? rate(last.rate) + " fsyncs, p50 " +
    duration(last.p50) + ", p99 " + duration(last.p99) + "; " : "") + snap.count + " since start, mean " +
    duration(snap.count ? snap.sum / snap.count : null);
  drawChart(document.getElementById("fsync-chart"), [
    { label: "p50", values: state.fsync.map(s => s.p50) },
    { label: "p99", values: state.fsync.map(s => s.p99) },
  ], duration, state.fsync.length ? now - state.fsync[0].at : 0);
}

// ---------------------------------------------------------------- polling
function setStatus(text, bad) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = bad ? "error" : "muted";
}
function notice(text, bad) {
  const n = document.getElementById("notice");
  n.textContent = text;
  n.className = bad ? "error" : "ok";
}

let inFlight = false;
async function refresh() {
  if (inFlight) return;
  inFlight = true;
  try {
    const [topics, groups, txns, cluster, fsync] = await Promise.all(
      ["/api/topics", "/api/groups", "/api/transactions", "/api/cluster", "/api/fsync"].map(get));
    renderCluster(cluster);
    renderTopics(topics, cluster);
    renderGroups(groups);
    renderTxns(txns);
    renderFsync(fsync);
    setStatus("Updated " + new Date().toLocaleTimeString() + ", every " + PERIOD_MS / 1000 + " s", false);
  } catch (e) {
    setStatus("Cannot reach the broker: " + e.message, true);
  } finally {
    inFlight = false;
  }
}
refresh();
setInterval(refresh, PERIOD_MS);
