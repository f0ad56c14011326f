// Existing backends, unchanged: the built package in Chromium against a backend of the kind
// FastAPI users already run (tests/backends/seed_fastapi: WebSocket
// /ws/logs that answers the text `ping` and heartbeats after 30 s, /sse/logs with `id:` +
// `data:` lines and `: keepalive`, a short poll /poll/logs returning a bare array, integer
// ids, nothing sent on connect), through nginx configs as they are found in front of such
// backends (tests/backends/nginx), the fault proxy, and Redis shared by two backends.
//
// The client is configured as PROTOCOL.md §10 tells such a user: the per-rung `urls`, a short
// poll, `interop.pingText: 'ping'`, and otherwise its defaults (deadlines, heartbeat).
// Every scenario publishes numbered events (`{type:'tick', data:{seq}}`, 20 per second) to
// the backend's POST /publish and audits what the client delivered: every event published
// after the client was first open arrives exactly once and in order, and the ids the backend
// gave them arrive strictly increasing. Each prints one line (`# scenario eb<n> …`), listed in
// SCENARIOS.md ("Existing backends"); a failing one also prints the client's diagnostics.
//
// Needs the backend's venv, which `cargo xtask test` creates (xtask/src/install.rs,
// `ensure_seed_backend`): <cargo target dir>/seed-backend-venv, or HOLDFAST_SEED_PYTHON.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { createInterface } from 'node:readline';
import { WebSocket } from 'ws';
import { launchBrowser, makeSite } from './harness.mjs';
import {
  RECORDER_PAGE,
  ROOT,
  audit,
  collect,
  errorCodes,
  failureClasses,
  mintToken,
  openRecorder,
  report,
  sleep,
  startNginx,
  startProxy,
  startRedis,
  stopChild,
  waitForSeq,
  waitOpen,
} from './faults.mjs';

const BACKEND_DIR = join(ROOT, 'tests/backends/seed_fastapi');
const NGINX_DIR = join(ROOT, 'tests/backends/nginx');

/// What PROTOCOL.md §10 tells a user of such a backend to pass, plus a quick backoff and no
/// remembered rung (each scenario starts from scratch).
const SEED_OPTIONS = {
  url: '/',
  urls: { websocket: '/ws/logs', sse: '/sse/logs', polling: '/poll/logs' },
  polling: { waitMs: 0, intervalMs: 500 },
  interop: { pingText: 'ping' },
  backoff: { initialMs: 200, maxMs: 2000 },
  remember: false,
  probe: false,
};

const TOKEN_SECRET = 'seed-token-secret-0123456789';
const TOKEN_LIFE_S = 3;
const RENEWALS = 3;

let site, browser;

before(async () => {
  site = makeSite({ 'r.html': RECORDER_PAGE });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  site?.remove();
});

// ----- the seed backend ---------------------------------------------------------------------

function seedPython() {
  if (process.env.HOLDFAST_SEED_PYTHON) return process.env.HOLDFAST_SEED_PYTHON;
  const t = process.env.CARGO_TARGET_DIR;
  const target = t ? (isAbsolute(t) ? t : join(ROOT, t)) : join(ROOT, 'target');
  const python = join(target, 'seed-backend-venv/bin/python');
  if (!existsSync(python))
    throw new Error(`${python} is missing: \`cargo xtask test --only e2e\` creates it (or set HOLDFAST_SEED_PYTHON to a python with tests/backends/seed_fastapi/requirements.txt)`);
  return python;
}

/// Starts tests/backends/seed_fastapi on a port the OS picks, serving the test site;
/// `env` holds its switches (SEED_TOKEN_SECRET, SEED_HISTORY_MAX, SEED_REDIS_URL, …).
async function startSeed(env = {}) {
  const child = spawn(seedPython(), [join(BACKEND_DIR, 'serve.py')], {
    env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1', SEED_STATIC_DIR: site.dir, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  child.once('error', (e) => (child.spawnError = e));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the seed backend did not start within 30 s')), 30_000);
    child.once('exit', (code) => reject(new Error(`the seed backend exited early with ${code}`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = line.match(/seed backend listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      } else console.log(`# seed backend: ${line}`);
    });
  });
  return {
    url,
    host: new URL(url).host,
    async stats() {
      const res = await fetch(`${url}/stats`, { signal: AbortSignal.timeout(3_000) });
      return res.json();
    },
    /// SIGKILL: a crash, no graceful shutdown.
    kill: () => stopChild(child, { signal: 'SIGKILL' }),
    stop: () => stopChild(child, { graceMs: 3_000 }),
  };
}

/// Numbered ticks to POST {target}/publish, `perTick` every `intervalMs`, as
/// faults.mjs `steadyPublisher` does for the reference server (same interface, so
/// `owedFrom` and the audit work alike): `seq` counts accepted events; a batch whose answer
/// was lost is `uncertain`. `injectRaw(entries)` puts raw store entries (bad ones) in front
/// of the next tick in the same request, so none of them is ever the last of a poll batch.
function seedPublisher({ targets, intervalMs = 50, perTick = 1 }) {
  let list = [...targets];
  let seq = 0;
  let next = 1;
  let running = true;
  let paused = false;
  let failures = 0;
  const ids = new Map();
  const uncertain = new Set();
  const pendingRaw = [];

  async function once() {
    const raw = pendingRaw.splice(0);
    const batch = [...raw.map((r) => r.entry)];
    for (let i = 0; i < perTick; i++) batch.push({ type: 'tick', data: { seq: next + i } });
    for (const target of list) {
      let res;
      try {
        res = await fetch(`${target}/publish`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(batch),
          signal: AbortSignal.timeout(3_000),
        });
      } catch {
        failures++;
        for (let i = 0; i < perTick; i++) uncertain.add(next + i);
        next += perTick;
        for (const r of raw) r.done(null);
        return;
      }
      if (!res.ok) {
        failures++;
        await res.text().catch(() => {});
        continue;
      }
      const body = await res.json();
      raw.forEach((r, i) => r.done(body.ids[i]));
      for (let i = 0; i < perTick; i++) ids.set(next + i, body.ids[raw.length + i]);
      seq = next + perTick - 1;
      next += perTick;
      return;
    }
    pendingRaw.unshift(...raw); // every target refused: try again with the next tick
  }

  const loop = (async () => {
    let due = Date.now();
    while (running) {
      if (!paused) await once();
      due += intervalMs;
      const wait = due - Date.now();
      if (wait > 0) await sleep(wait);
      else due = Date.now();
    }
  })();

  return {
    last: () => seq,
    next: () => next,
    idOf: (n) => ids.get(n),
    uncertain,
    failures: () => failures,
    setTargets(t) {
      list = [...t];
    },
    /// Resolves with the store id of `entry` once it was published in front of a tick.
    injectRaw(entry) {
      return new Promise((done) => pendingRaw.push({ entry, done }));
    },
    async stop() {
      running = false;
      await loop;
      return seq;
    },
  };
}

/// Events published once, outside the numbered stream (history the backend already has
/// when the client connects, as every running backend does).
async function publishOnce(target, events) {
  const res = await fetch(`${target}/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(events),
  });
  if (!res.ok) throw new Error(`publish: HTTP ${res.status}`);
  return (await res.json()).ids;
}

// ----- the audit and the report -------------------------------------------------------------

/// The store ids the client delivered, in delivery order: integers, strictly increasing, each
/// the one the backend gave that tick.
function auditIds(messages, publisher) {
  let notIncreasing = 0;
  let wrong = 0;
  let previous = -Infinity;
  for (const [seq, id] of messages) {
    const n = Number(id);
    if (!(n > previous)) notIncreasing++;
    previous = n;
    const expected = publisher.idOf(seq);
    if (expected !== undefined && String(expected) !== String(id)) wrong++;
  }
  return { notIncreasing, wrong };
}

/// Stops the publisher, waits (bounded) for the last accepted event, lets stragglers arrive,
/// then collects and audits (faults.mjs `finish`, plus the id audit).
async function finishSeed(page, publisher, { firstOwed, reallyGone }) {
  const lastSent = await publisher.stop();
  try {
    await waitForSeq(page, lastSent, 30_000);
  } catch {
    // audited below: the missing events are counted, not just a timeout
  }
  await sleep(500);
  const result = await collect(page);
  const a = audit({ messages: result.messages, gaps: result.gaps, firstOwed, lastSent, uncertain: publisher.uncertain, reallyGone });
  const ids = auditIds(result.messages, publisher);
  return { result, audit: a, ids };
}

function assertExactlyOnce(a, ids, { gaps = 0 } = {}) {
  assert.ok(a.sent > 0, `events were published while the client was open (${JSON.stringify(a)})`);
  assert.equal(a.duplicates, 0, `no event delivered twice (${JSON.stringify(a)})`);
  assert.equal(a.outOfOrder, 0, `events in order (${JSON.stringify(a)})`);
  assert.equal(a.missing, 0, `no event missing (missing: ${JSON.stringify(a.missingSeqs)})`);
  assert.equal(a.gaps, gaps, `${gaps} gap(s) reported (${JSON.stringify(a)})`);
  assert.equal(ids.notIncreasing, 0, `event ids strictly increasing (${JSON.stringify(ids)})`);
  assert.equal(ids.wrong, 0, `each event carries the id the store gave it (${JSON.stringify(ids)})`);
}

/// The state changes after the first `open`: [{status, transport}].
function statesAfterOpen(result) {
  const i = result.states.findIndex((s) => s.status === 'open');
  return i < 0 ? [] : result.states.slice(i).map((s) => ({ status: s.status, transport: s.transport }));
}

/// The client's own account, printed when a scenario fails (for whoever fixes the engine).
async function printDiagnostics(label, page) {
  const d = await collect(page).catch((e) => ({ collectError: e.message }));
  if (d.collectError) {
    console.log(`# diagnostics ${label}: could not be read (${d.collectError})`);
    return;
  }
  const short = {
    snapshot: d.snapshot,
    states: d.states.map((s) => `${s.status}/${s.transport}@${s.at - (d.states[0]?.at ?? 0)}ms`),
    attempts: d.attempts.map((x) => `${x.transport}${x.probe ? ' (probe)' : ''}: ${x.failure ?? (x.openedAt ? 'opened' : 'pending')}${x.message ? ` — ${x.message}` : ''}`),
    notes: d.notes.slice(-12).map((n) => n.text),
    errors: d.errors.slice(0, 12).map((e) => `${e.code}${e.transport ? `@${e.transport}` : ''}: ${e.message}`),
    delivered: d.messages.length,
    otherMessages: d.others,
    gaps: d.gaps,
  };
  console.log(`# diagnostics ${label}: ${JSON.stringify(short)}`);
}

/// Runs one scenario: `body(ctx)` prints its result line through `ctx.report`; anything
/// that fails on the way prints a result line saying so, and the client's diagnostics.
async function scenario(label, body) {
  const ctx = { rec: null, cleanups: [] };
  let printed = false;
  ctx.report = (a, transport, classes, extra) => {
    printed = true;
    const missing = a.missing ? `missing seqs [${a.missingSeqs}]; ` : '';
    return report(label, a, transport, classes, missing + extra);
  };
  try {
    await body(ctx);
  } catch (e) {
    if (!printed) console.log(`# scenario ${label}: FAILED before the audit: ${e.message.split('\n')[0]}`);
    if (ctx.rec) await printDiagnostics(label, ctx.rec.page);
    throw e;
  } finally {
    for (const c of ctx.cleanups.reverse()) await c().catch(() => {});
  }
}

/// Opens the recorder page at `pageUrl` with SEED_OPTIONS plus `options`.
async function openClient(ctx, pageUrl, options, extra) {
  ctx.rec = await openRecorder(browser, pageUrl, { ...SEED_OPTIONS, ...options }, extra);
  ctx.cleanups.push(() => ctx.rec.close());
  return ctx.rec;
}

async function seed(ctx, env) {
  const s = await startSeed(env);
  ctx.cleanups.push(() => s.stop());
  return s;
}

function publisherFor(ctx, targets) {
  const p = seedPublisher({ targets });
  ctx.cleanups.push(() => p.stop());
  return p;
}

async function nginxFor(ctx, template, backends) {
  // startNginx reads examples/deploy/nginx/<template>: these are tests/backends/nginx's.
  const relative = join('../../../tests/backends/nginx', template);
  if (!existsSync(join(NGINX_DIR, template))) throw new Error(`no nginx template ${template}`);
  const n = await startNginx(relative, { upstreams: backends.map((b) => b.host), base: '' });
  ctx.cleanups.push(() => n.stop());
  return n;
}

/// Waits (bounded) for the client to be open on `transport`; does not throw: the scenario
/// goes on to its audit, whose printed line then says where the client really ended.
async function settleOn(page, transport, timeoutMs) {
  return waitOpen(page, transport, timeoutMs).then(() => true, () => false);
}

/// The first event owed to a client seen open now (faults.mjs `owedFrom`).
const owedFrom = (publisher) => publisher.next() + 1;

// ----- the backend itself ------------------------------------------------------------------

/// Reads one message from a `ws` WebSocket (bounded).
function nextMessage(ws, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${what} within 10 s`)), 10_000);
    ws.once('message', (data) => {
      clearTimeout(timer);
      resolve(String(data));
    });
  });
}

/// Reads SSE body chunks until `predicate(text so far)` holds (bounded).
async function readUntil(reader, predicate, what) {
  let text = '';
  const decoder = new TextDecoder();
  const deadline = Date.now() + 10_000;
  while (!predicate(text)) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`no ${what} within 10 s; got ${JSON.stringify(text)}`);
    const r = await Promise.race([reader.read(), new Promise((res) => setTimeout(res, left, null).unref())]);
    if (!r || r.done) throw new Error(`the stream ended before ${what}; got ${JSON.stringify(text)}`);
    text += decoder.decode(r.value, { stream: true });
  }
  return text;
}

test('existing backends 0: the test backend speaks as described (nothing on connect, only the text ping answered, heartbeat and keepalive after silence, replay from since, 410, 401 and 4401)', { timeout: 60_000 }, async () => {
  const cleanups = [];
  try {
    const backend = await startSeed({ SEED_HEARTBEAT_SECS: '1.5', SEED_HISTORY_MAX: '5' });
    cleanups.push(() => backend.stop());
    const wsUrl = backend.url.replace('http:', 'ws:');
    // WebSocket: the first thing it says is the answer to the text ping, so it sent nothing
    // on connect and ignored the JSON ping sent before; then, left alone, a heartbeat.
    const ws = new WebSocket(`${wsUrl}/ws/logs`);
    cleanups.push(() => ws.terminate());
    await new Promise((resolve, reject) => (ws.once('open', resolve), ws.once('error', reject)));
    ws.send('{"type":"ping"}');
    ws.send('ping');
    assert.equal(await nextMessage(ws, 'pong'), '{"type": "pong"}');
    assert.equal(await nextMessage(ws, 'heartbeat'), '{"type": "heartbeat"}');
    const [id1] = await publishOnce(backend.url, [{ type: 'tick', data: { seq: 1 } }]);
    assert.deepEqual(JSON.parse(await nextMessage(ws, 'event')), { id: id1, type: 'tick', data: { seq: 1 } });
    // SSE: headers, no byte until an event (no `: ok`), `id:` + `data:`, then a keepalive.
    const res = await fetch(`${backend.url}/sse/logs`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/event-stream/);
    const reader = res.body.getReader();
    cleanups.push(() => reader.cancel());
    const [id2] = await publishOnce(backend.url, [{ type: 'tick', data: { seq: 2 } }]);
    const first = await readUntil(reader, (t) => t.includes('\n\n'), 'the first SSE event');
    assert.equal(first, `id: ${id2}\ndata: ${JSON.stringify({ id: id2, type: 'tick', data: { seq: 2 } }).replaceAll(',', ', ').replaceAll(':', ': ')}\n\n`);
    assert.equal(await readUntil(reader, (t) => t.includes('\n\n'), 'a keepalive'), ': keepalive\n\n');
    // Polling: a bare array after `since`; resume by `since` on WebSocket; 410 below what is kept.
    await publishOnce(backend.url, [3, 4, 5, 6].map((seq) => ({ type: 'tick', data: { seq } })));
    const polled = await (await fetch(`${backend.url}/poll/logs?since=${id2}`)).json();
    assert.deepEqual(polled.map((e) => e.data.seq), [3, 4, 5, 6]);
    const replay = new WebSocket(`${wsUrl}/ws/logs?since=${polled[1].id}`);
    cleanups.push(() => replay.terminate());
    assert.equal(JSON.parse(await nextMessage(replay, 'a replayed event')).data.seq, 5);
    assert.equal((await fetch(`${backend.url}/poll/logs?since=0`)).status, 410);
    assert.equal((await fetch(`${backend.url}/poll/logs`)).status, 200);
    // Tokens: 401 without one on SSE and polling, close 4401 on WebSocket.
    const guarded = await startSeed({ SEED_TOKEN_SECRET: TOKEN_SECRET });
    cleanups.push(() => guarded.stop());
    assert.equal((await fetch(`${guarded.url}/poll/logs`)).status, 401);
    assert.equal((await fetch(`${guarded.url}/sse/logs`)).status, 401);
    const good = mintToken(TOKEN_SECRET, { exp: Date.now() / 1000 + 60 });
    assert.equal((await fetch(`${guarded.url}/poll/logs`, { headers: { authorization: `Bearer ${good}` } })).status, 200);
    const refused = new WebSocket(`${guarded.url.replace('http:', 'ws:')}/ws/logs?token=expired.or.bad`);
    cleanups.push(() => refused.terminate());
    const code = await new Promise((resolve) => refused.once('close', resolve));
    assert.equal(code, 4401);
    console.log('# scenario eb0 (the test backend): nothing on connect, JSON ping ignored, text ping answered, heartbeat, keepalive, since replay, 410, 401, 4401: as described');
  } finally {
    for (const c of cleanups.reverse()) await Promise.resolve().then(c).catch(() => {});
  }
});

// ----- each rung alone ----------------------------------------------------------------------

for (const [n, rung] of [[1, 'websocket'], [2, 'sse'], [3, 'polling']]) {
  test(`existing backends ${n}: ${rung} alone reaches open with no server preamble and delivers every event once, in order`, { timeout: 90_000 }, () =>
    scenario(`eb${n} (${rung} alone)`, async (ctx) => {
      const backend = await seed(ctx);
      const publisher = publisherFor(ctx, [backend.url]);
      const rec = await openClient(ctx, `${backend.url}/r.html`, { transports: [rung] });
      await waitOpen(rec.page, rung, 30_000);
      const firstOwed = owedFrom(publisher);
      await sleep(4000);
      const { result, audit: a, ids } = await finishSeed(rec.page, publisher, { firstOwed });
      const classes = failureClasses(result);
      ctx.report(a, result.snapshot.transport, classes, `errors [${errorCodes(result)}]`);
      assertExactlyOnce(a, ids);
      assert.equal(result.snapshot.transport, rung);
      assert.deepEqual(classes, [], 'no attempt failed');
      assert.deepEqual(errorCodes(result), [], 'no error reached the app');
      assert.deepEqual(rec.problems, []);
    }));
}

// ----- the full ladder through nginx configs found in front of such backends ----------------

const NGINX_CASES = [
  [4, 'recommended nginx', 'seed004-recommended.conf.template', 'websocket'],
  [5, '"current" nginx (Connection upgrade always)', 'seed004-current.conf.template', 'websocket'],
  [6, 'gateway nginx (rate limits, SSE location)', 'seed002-gateway.conf.template', 'websocket'],
  [7, 'nginx without Upgrade headers', 'seed004-no-upgrade.conf.template', 'sse'],
  [8, 'nginx defaults (buffered SSE, no upgrade)', 'seed004-plain.conf.template', 'polling'],
];

for (const [n, label, template, expected] of NGINX_CASES) {
  test(`existing backends ${n}: the full ladder through ${label} ends on ${expected}, nothing lost or repeated`, { timeout: 120_000 }, () =>
    scenario(`eb${n} (${label})`, async (ctx) => {
      const backend = await seed(ctx);
      const nginx = await nginxFor(ctx, template, [backend]);
      const publisher = publisherFor(ctx, [backend.url]);
      const rec = await openClient(ctx, `${nginx.url}/r.html`, {});
      await waitOpen(rec.page, undefined, 30_000);
      const firstOwed = owedFrom(publisher);
      await settleOn(rec.page, expected, 30_000);
      await sleep(5000);
      const { result, audit: a, ids } = await finishSeed(rec.page, publisher, { firstOwed });
      const classes = failureClasses(result);
      ctx.report(a, result.snapshot.transport, classes, `errors [${errorCodes(result)}]`);
      assertExactlyOnce(a, ids);
      assert.equal(result.snapshot.transport, expected);
      if (expected === 'websocket') assert.deepEqual(classes, [], 'no attempt failed');
      assert.deepEqual(rec.problems, []);
    }));
}

// ----- idle for 10 s after connecting, then busy --------------------------------------------

// On WebSocket the client pings every 2 s meanwhile (`heartbeat.intervalMs`): the text
// `ping` of `interop.pingText`, which this backend answers; it ignores `{"type":"ping"}`.
const IDLE_CASES = [
  [9, 'websocket', { heartbeat: { intervalMs: 2000, timeoutMs: 1000 } }],
  [10, 'sse', { transports: ['sse', 'polling'] }],
];

for (const [n, rung, options] of IDLE_CASES) {
  test(`existing backends ${n}: a ${rung} idle for 10 s after connecting stays open on ${rung} (no reconnect, no fallback), then delivers`, { timeout: 90_000 }, () =>
    scenario(`eb${n} (${rung} idle 10 s, then busy)`, async (ctx) => {
      const backend = await seed(ctx);
      // The backend already has history (not ticks) when the client connects.
      await publishOnce(backend.url, Array.from({ length: 5 }, (_, i) => ({ type: 'history', data: { n: i + 1 } })));
      const rec = await openClient(ctx, `${backend.url}/r.html`, options);
      await waitOpen(rec.page, rung, 30_000);
      await sleep(10_000);
      const publisher = publisherFor(ctx, [backend.url]);
      const firstOwed = 1; // nothing was published before: every tick is owed
      await sleep(4000);
      const { result, audit: a, ids } = await finishSeed(rec.page, publisher, { firstOwed });
      const classes = failureClasses(result);
      const after = statesAfterOpen(result);
      const changes = after.filter((s) => s.status !== 'open' || s.transport !== rung);
      const { pongs } = await backend.stats();
      ctx.report(a, result.snapshot.transport, classes, `state changes after open ${JSON.stringify(changes.map((s) => `${s.status}/${s.transport}`))}, pongs ${pongs}`);
      assertExactlyOnce(a, ids);
      assert.deepEqual(changes, [], 'after open: no reconnecting, no other rung');
      if (rung === 'websocket') assert.ok(pongs >= 3, `the client pinged with the text the backend answers (${pongs} pongs)`);
      assert.equal(result.snapshot.transport, rung);
      assert.deepEqual(classes, [], 'no attempt failed');
      assert.deepEqual(rec.problems, []);
    }));
}

// ----- blocked paths still found: a black-holed upgrade, a partly buffered SSE stream --------

const POLL_LATENCY_MS = 300;

test('existing backends 11: an upgrade answered 101 and then black-holed is found, the client ends on SSE with every event', { timeout: 120_000 }, () =>
  scenario('eb11 (black-holed upgrade)', async (ctx) => {
    const backend = await seed(ctx);
    const proxy = await startProxy(backend.url, {
      rules: [
        { paths: ['/ws/logs'], silenceAfterUpgrade: true },
        // Polls take a slower route than the stream (300 ms each way): whatever the client
        // learns from a poll is older or newer than what the stream saw, never the same instant.
        { paths: ['/poll/logs'], latencyMs: POLL_LATENCY_MS },
      ],
    });
    ctx.cleanups.push(() => proxy.stop());
    const publisher = publisherFor(ctx, [backend.url]);
    const rec = await openClient(ctx, `${proxy.url}/r.html`, {});
    await waitOpen(rec.page, undefined, 30_000);
    const firstOwed = owedFrom(publisher);
    await settleOn(rec.page, 'sse', 30_000);
    await sleep(5000);
    const { result, audit: a, ids } = await finishSeed(rec.page, publisher, { firstOwed });
    const classes = failureClasses(result);
    ctx.report(a, result.snapshot.transport, classes, `errors [${errorCodes(result)}]`);
    assertExactlyOnce(a, ids);
    assert.equal(result.snapshot.transport, 'sse');
    assert.ok(classes.length > 0, 'the blocked WebSocket shows in the diagnostics');
    assert.deepEqual(rec.problems, []);
  }));

test('existing backends 12: SSE arriving in 4 KiB bursts (upgrade refused) is found, the client ends on polling with every event', { timeout: 120_000 }, () =>
  scenario('eb12 (SSE in 4 KiB bursts)', async (ctx) => {
    const backend = await seed(ctx);
    const proxy = await startProxy(backend.url, {
      rules: [
        { paths: ['/ws/logs'], refuseUpgrade: 404 },
        { paths: ['/sse/logs'], bufferBytes: 4096, bufferHeaders: false },
        { paths: ['/poll/logs'], latencyMs: POLL_LATENCY_MS }, // as in eb11
      ],
    });
    ctx.cleanups.push(() => proxy.stop());
    const publisher = publisherFor(ctx, [backend.url]);
    const rec = await openClient(ctx, `${proxy.url}/r.html`, {});
    await waitOpen(rec.page, undefined, 30_000);
    const firstOwed = owedFrom(publisher);
    await settleOn(rec.page, 'polling', 30_000);
    await sleep(5000);
    const { result, audit: a, ids } = await finishSeed(rec.page, publisher, { firstOwed });
    const classes = failureClasses(result);
    ctx.report(a, result.snapshot.transport, classes, `errors [${errorCodes(result)}]`);
    assertExactlyOnce(a, ids);
    assert.equal(result.snapshot.transport, 'polling');
    assert.ok(classes.includes('upgrade_refused'), `failure classes ${JSON.stringify(classes)} include upgrade_refused`);
    assert.deepEqual(rec.problems, []);
  }));

// ----- polling: bad entries, 410 Gone -------------------------------------------------------

test('existing backends 13: bad entries in a poll batch are one error each; the good events around them arrive in order and polling goes on', { timeout: 90_000 }, () =>
  scenario('eb13 (bad poll entries)', async (ctx) => {
    const backend = await seed(ctx);
    const publisher = publisherFor(ctx, [backend.url]);
    const rec = await openClient(ctx, `${backend.url}/r.html`, { transports: ['polling'] });
    await waitOpen(rec.page, 'polling', 30_000);
    const firstOwed = owedFrom(publisher);
    await sleep(1000);
    // Each in front of a tick in the same publish, 0.7 s apart (so in separate batches).
    const BAD = [
      { raw: 'not an event' }, // a JSON string
      { raw: [1, 2, 3] }, // an array
      { raw: { type: 7, data: {} }, withId: true }, // `type` a number, with an id
      { raw: { id: { n: 1 }, type: 'tick', data: {} } }, // `id` an object
    ];
    for (const entry of BAD) {
      await publisher.injectRaw(entry);
      await sleep(700);
    }
    await sleep(2000);
    const { result, audit: a, ids } = await finishSeed(rec.page, publisher, { firstOwed });
    const classes = failureClasses(result);
    const codes = result.errors.map((e) => e.code);
    ctx.report(a, result.snapshot.transport, classes, `bad entries ${BAD.length}, errors [${codes}]`);
    assertExactlyOnce(a, ids);
    assert.equal(codes.length, BAD.length, `one error per bad entry: ${JSON.stringify(result.errors)}`);
    assert.ok(codes.every((c) => c === 'bad_frame'), `each a bad_frame: ${JSON.stringify(codes)}`);
    assert.equal(result.snapshot.transport, 'polling');
    assert.deepEqual(rec.problems, []);
  }));

test('existing backends 14: 410 Gone on a poll (cursor older than the kept history) is one gap, then polling goes on', { timeout: 90_000 }, () =>
  scenario('eb14 (410 Gone)', async (ctx) => {
    const backend = await seed(ctx, { SEED_HISTORY_MAX: '40' });
    const proxy = await startProxy(backend.url, {});
    ctx.cleanups.push(() => proxy.stop());
    const publisher = publisherFor(ctx, [backend.url]);
    const rec = await openClient(ctx, `${proxy.url}/r.html`, { transports: ['polling'] });
    await waitOpen(rec.page, 'polling', 30_000);
    const firstOwed = owedFrom(publisher);
    await sleep(2000);
    // Cut the client off while 80 events are published: only the newest 40 are kept.
    await proxy.set({ refuseConnections: true });
    await proxy.cut();
    await sleep(4000);
    await proxy.set({});
    await sleep(4000);
    const stats = await backend.stats();
    const trimmedThrough = stats.trimmed_through;
    const reallyGone = (s) => publisher.idOf(s) !== undefined && publisher.idOf(s) <= trimmedThrough;
    const { result, audit: a, ids } = await finishSeed(rec.page, publisher, { firstOwed, reallyGone });
    const classes = failureClasses(result);
    ctx.report(a, result.snapshot.transport, classes, `410s answered ${stats.gone}, gap reasons [${result.gaps.map((g) => g.reason)}], errors [${errorCodes(result)}]`);
    assert.ok(stats.gone >= 1, 'the backend answered 410');
    assertExactlyOnce(a, ids, { gaps: 1 });
    assert.ok(a.lost > 0, 'the trimmed events are the ones reported lost');
    assert.equal(result.snapshot.transport, 'polling');
    assert.deepEqual(rec.problems, []);
  }));

// ----- token expiry on every rung -----------------------------------------------------------


for (const [n, rung] of [[15, 'websocket'], [16, 'sse'], [17, 'polling']]) {
  test(`existing backends ${n}: tokens that expire every ${TOKEN_LIFE_S} s on ${rung}: the client refreshes and goes on, no unauthorized reaches the app`, { timeout: 90_000 }, () =>
    scenario(`eb${n} (token expiry, ${rung})`, async (ctx) => {
      const backend = await seed(ctx, { SEED_TOKEN_SECRET: TOKEN_SECRET });
      const publisher = publisherFor(ctx, [backend.url]);
      const rec = await openClient(ctx, `${backend.url}/r.html`, { transports: [rung] }, {
        tokenFunction: 'seedToken',
        // Every call returns a fresh token that lives TOKEN_LIFE_S seconds.
        beforeStart: (page) => page.exposeFunction('seedToken', () => mintToken(TOKEN_SECRET, { exp: Date.now() / 1000 + TOKEN_LIFE_S })),
      });
      await waitOpen(rec.page, rung, 30_000);
      const firstOwed = owedFrom(publisher);
      // Run until the client has renewed its token RENEWALS times (and on WebSocket and SSE
      // the backend has closed a connection whose token ran out as often), bounded; then
      // let it be open again and audit.
      const expiriesOf = (stats) => (rung === 'polling' ? stats.unauthorized.polling : stats.expired_closes[rung]);
      const deadline = Date.now() + 45_000;
      for (;;) {
        const calls = await rec.page.evaluate(() => window.rec.tokenCalls);
        const expired = expiriesOf(await backend.stats());
        if (calls - 1 >= RENEWALS && (rung === 'polling' || expired >= RENEWALS)) break;
        if (Date.now() > deadline) break; // audited and asserted below
        await sleep(250);
      }
      await settleOn(rec.page, rung, 15_000);
      await sleep(1000);
      const { result, audit: a, ids } = await finishSeed(rec.page, publisher, { firstOwed });
      const stats = await backend.stats();
      const classes = failureClasses(result);
      const codes = errorCodes(result);
      const expiries = expiriesOf(stats);
      ctx.report(a, result.snapshot.transport, classes,
        `token calls ${result.tokenCalls}, expiries seen by the backend ${expiries}, refusals ${stats.unauthorized[rung]}, errors [${codes}]`);
      assertExactlyOnce(a, ids);
      // A connection outlives its token on WebSocket and SSE (the backend closes it); a poll
      // meets a 401 or not, depending on when the client asks for a fresh token.
      assert.ok(result.tokenCalls - 1 >= RENEWALS, `the token was renewed ${RENEWALS} times (token function called ${result.tokenCalls} times)`);
      if (rung !== 'polling') assert.ok(expiries >= RENEWALS, `tokens ran out under the open ${rung} ${RENEWALS} times (${expiries})`);
      assert.ok(!codes.includes('unauthorized'), `no unauthorized error reached the app: ${JSON.stringify(result.errors)}`);
      assert.deepEqual([...new Set(result.states.map((s) => s.transport).filter(Boolean))], [rung], 'no other rung');
      assert.equal(result.snapshot.transport, rung);
      assert.deepEqual(rec.problems, []);
    }));
}

// ----- two backends sharing one Redis behind one nginx, one killed --------------------------

test('existing backends 18: two backends on one Redis behind nginx; the one serving the client is killed; it resumes on the other, nothing lost or repeated', { timeout: 120_000 }, () =>
  scenario('eb18 (two backends, one killed)', async (ctx) => {
    const redis = await startRedis();
    ctx.cleanups.push(() => redis.stop());
    const env = { SEED_REDIS_URL: redis.url, SEED_REDIS_PREFIX: 'eb18' };
    const backends = [await seed(ctx, env), await seed(ctx, env)];
    const nginx = await nginxFor(ctx, 'seed004-recommended.conf.template', backends);
    const publisher = publisherFor(ctx, [backends[0].url]);
    const rec = await openClient(ctx, `${nginx.url}/r.html`, {});
    await waitOpen(rec.page, 'websocket', 30_000);
    const firstOwed = owedFrom(publisher);
    await sleep(1500);
    const before = await Promise.all(backends.map((b) => b.stats()));
    const counts = before.map((s) => s.connections.websocket);
    assert.equal(counts[0] + counts[1], 1, `one WebSocket in total: ${counts}`);
    const victim = counts[0] === 1 ? 0 : 1;
    const survivor = 1 - victim;
    publisher.setTargets([backends[survivor].url]);
    await sleep(1000);
    await backends[victim].kill();
    await sleep(500);
    await settleOn(rec.page, 'websocket', 30_000);
    await sleep(3000);
    const onSurvivor = (await backends[survivor].stats()).connections.websocket;
    const { result, audit: a, ids } = await finishSeed(rec.page, publisher, { firstOwed });
    const classes = failureClasses(result);
    ctx.report(a, result.snapshot.transport, classes, `killed backend ${victim + 1} of 2, WebSockets on the survivor ${onSurvivor}, errors [${errorCodes(result)}]`);
    assertExactlyOnce(a, ids);
    assert.equal(result.snapshot.transport, 'websocket');
    assert.equal(onSurvivor, 1, 'the client is now on the surviving backend');
    assert.deepEqual(rec.problems, []);
  }));
