// Helpers of the reliability suite (tests/e2e/reliability_*.test.mjs): the fault-injecting
// proxy, real nginx from the examples/deploy templates, redis-server, a steady publisher,
// a recording page, and the delivery audit every scenario ends with.
//
// Contract: every process started here binds 127.0.0.1 on a port the OS picked, and is
// stopped by its handle's `stop()` (tests call it in `after`/`finally`); every wait is
// bounded and fails with a message saying what it waited for.
//
// Environment (set by `cargo xtask test`): HOLDFAST_FAULT_PROXY_BIN, and those of harness.mjs.

import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createHmac } from 'node:crypto';
import { PUBLISH_KEY } from './harness.mjs';

export const ROOT = process.env.HOLDFAST_ROOT ?? resolve(dirname(fileURLToPath(import.meta.url)), '../..');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export { sleep };

function requiredEnv(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the end-to-end tests through \`cargo xtask test\``);
  return value;
}

/// A TCP port that was free a moment ago (for processes that cannot bind port 0 and report it).
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolvePort(port));
    });
  });
}

/// Resolves once something accepts TCP connections on `port`, or throws after `timeoutMs`.
export async function waitForPort(port, { timeoutMs = 10_000, what = `port ${port}`, child } = {}) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child?.spawnError) throw new Error(`${what} could not start: ${child.spawnError.message}`);
    if (child && child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode} before listening`);
    const ok = await new Promise((r) => {
      const sock = connect(port, '127.0.0.1');
      sock.once('connect', () => {
        sock.destroy();
        r(true);
      });
      sock.once('error', () => r(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`${what} did not accept connections within ${timeoutMs} ms`);
}

/// Stops a child: `signal` first, SIGKILL after `graceMs`; resolves when it exited.
export async function stopChild(child, { signal = 'SIGTERM', graceMs = 5_000 } = {}) {
  if (!child || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

// ----- the fault proxy ------------------------------------------------------------------

/// Starts holdfast-fault-proxy in front of `upstream` (`http://127.0.0.1:PORT` or
/// `127.0.0.1:PORT`) with initial faults `config`. Faults are changed with `set(cfg)`.
export async function startProxy(upstream, config = {}) {
  const bin = requiredEnv('HOLDFAST_FAULT_PROXY_BIN');
  const target = upstream.replace(/^http:\/\//, '').replace(/\/.*$/, '');
  const child = spawn(bin, ['--listen', '127.0.0.1:0', '--upstream', target, '--config', JSON.stringify(config)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise((res, reject) => {
    const timer = setTimeout(() => reject(new Error(`${bin} did not start within 10 s`)), 10_000);
    child.once('exit', (code) => reject(new Error(`${bin} exited early with ${code}`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = line.match(/fault-proxy listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        res(m[1]);
      }
    });
  });
  const control = async (method, path, body) => {
    const res = await fetch(`${url}/__fault/${path}`, {
      method,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(5_000),
    });
    const json = await res.json();
    if (!res.ok) throw new Error(`fault proxy ${method} ${path}: HTTP ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
  return {
    url,
    /// Replaces the active faults.
    set: (cfg) => control('POST', 'config', cfg),
    /// Closes every open proxied connection now.
    cut: () => control('POST', 'cut'),
    stats: () => control('GET', 'stats'),
    stop: () => stopChild(child),
  };
}

// ----- redis and nginx --------------------------------------------------------------------

/// Starts redis-server on a free port with no persistence.
export async function startRedis() {
  const dir = mkdtempSync(join(tmpdir(), 'holdfast-redis-'));
  for (let tries = 0; tries < 5; tries++) {
    const port = await freePort();
    const child = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    child.once('error', (e) => (child.spawnError = e));
    try {
      await waitForPort(port, { what: 'redis-server', child });
    } catch (e) {
      await stopChild(child);
      if (tries === 4) throw e;
      continue;
    }
    return {
      url: `redis://127.0.0.1:${port}`,
      port,
      async stop() {
        await stopChild(child);
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  throw new Error('redis-server did not start');
}

function nginxBin() {
  const found = ['/usr/sbin/nginx', '/usr/bin/nginx', '/usr/local/sbin/nginx'].find((p) => existsSync(p));
  if (!found) throw new Error('nginx not found: install it with `apt-get install -y nginx`');
  return found;
}

/// Renders `examples/deploy/nginx/<template>` for `upstreams` (`127.0.0.1:PORT`, one or
/// more: more than one becomes an upstream block with every server) and runs nginx as a
/// plain process with a temporary prefix.
export async function startNginx(template, { upstreams, base = '/realtime' }) {
  const text = readFileSync(join(ROOT, 'examples/deploy/nginx', template), 'utf8');
  const prefix = mkdtempSync(join(tmpdir(), 'holdfast-nginx-'));
  // nginx workers run as `nobody` when started by root: they must reach the temp dirs.
  chmodSync(prefix, 0o755);
  for (let tries = 0; tries < 5; tries++) {
    const port = await freePort();
    const hosts = upstreams.map((u) => u.replace(/^http:\/\//, ''));
    const lines = hosts.map((u) => `server ${u} max_fails=1 fail_timeout=30s;`);
    const conf = text
      .replace(/server @@UPSTREAM@@;/, lines.join('\n        '))
      .replaceAll('@@UPSTREAM@@', hosts[0])
      .replaceAll('@@PREFIX@@', prefix)
      .replaceAll('@@LISTEN@@', `127.0.0.1:${port}`)
      .replaceAll('@@BASE@@', base);
    if (conf.includes('@@')) throw new Error(`unreplaced placeholder in ${template}`);
    const confPath = join(prefix, 'nginx.conf');
    writeFileSync(confPath, conf);
    const child = spawn(nginxBin(), ['-p', prefix, '-c', confPath], { stdio: ['ignore', 'ignore', 'inherit'] });
    child.once('error', (e) => (child.spawnError = e));
    try {
      await waitForPort(port, { what: `nginx (${template})`, child });
    } catch (e) {
      await stopChild(child);
      if (tries === 4) throw e;
      continue;
    }
    return {
      url: `http://127.0.0.1:${port}`,
      prefix,
      async stop() {
        // SIGTERM: the master stops its workers (SIGKILL would orphan them).
        await stopChild(child);
        rmSync(prefix, { recursive: true, force: true });
      },
    };
  }
  throw new Error(`nginx did not start with ${template}`);
}

// ----- tokens -----------------------------------------------------------------------------

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/// An HS256 JWT as PROTOCOL.md §8 describes (`exp` in Unix seconds, optional `topics`).
export function mintToken(secret, { exp, topics } = {}) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = { exp, sub: 'e2e' };
  if (topics) claims.topics = topics;
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${header}.${body}`).digest('base64url');
  return `${header}.${body}.${sig}`;
}

// ----- the steady publisher ---------------------------------------------------------------

/// Publishes numbered events `{type: 'tick', data: {seq}}` to `topic`, `perTick` every
/// `intervalMs`, for as long as it runs. `seq` counts accepted events only: a publish the
/// server refused is tried again with the same numbers; one whose answer was lost (the
/// server died mid-request) may or may not have been stored, so its numbers are marked
/// `uncertain` and never reused. `targets` are server base URLs, tried in order.
export function steadyPublisher({ targets, topic, intervalMs = 50, perTick = 1, pad = 0 }) {
  let list = [...targets];
  let seq = 0;
  let next = 1;
  let running = true;
  let paused = false;
  let failures = 0;
  let inFlight = Promise.resolve();
  const ids = new Map();
  const uncertain = new Set();
  const accepted = []; // [seq, target, atMs]
  let loop;
  const padding = pad > 0 ? 'x'.repeat(pad) : undefined;

  async function once() {
    const batch = [];
    for (let i = 0; i < perTick; i++) batch.push({ type: 'tick', data: padding ? { seq: next + i, pad: padding } : { seq: next + i } });
    for (const target of list) {
      let res;
      try {
        res = await fetch(`${target}/realtime/publish?topic=${encodeURIComponent(topic)}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${PUBLISH_KEY}` },
          body: JSON.stringify(batch),
          signal: AbortSignal.timeout(3_000),
        });
      } catch {
        // No answer: the server may have stored the batch before it died.
        failures++;
        for (let i = 0; i < perTick; i++) uncertain.add(next + i);
        next += perTick;
        return;
      }
      if (!res.ok) {
        failures++;
        await res.text().catch(() => {});
        continue; // refused: nothing stored; try the next target
      }
      const body = await res.json();
      for (let i = 0; i < perTick; i++) {
        ids.set(next + i, body.ids?.[i]);
        accepted.push([next + i, target, Date.now()]);
      }
      seq = next + perTick - 1;
      next += perTick;
      return;
    }
  }

  loop = (async () => {
    let due = Date.now();
    while (running) {
      if (!paused) {
        inFlight = once();
        await inFlight;
      }
      due += intervalMs;
      const wait = due - Date.now();
      if (wait > 0) await sleep(wait);
      else due = Date.now(); // fell behind (a slow server): keep the rate, do not burst
    }
  })();

  return {
    /// The highest number the server accepted.
    last: () => seq,
    /// The number the next publish will carry.
    next: () => next,
    idOf: (n) => ids.get(n),
    uncertain,
    accepted,
    failures: () => failures,
    /// Switches the servers published to (the first that accepts wins).
    setTargets(t) {
      list = [...t];
    },
    /// Stops publishing; resolves once no publish is in flight, so `last()` then stays put
    /// until `resume()`.
    async pause() {
      paused = true;
      await inFlight;
    },
    resume() {
      paused = false;
    },
    /// Resolves once at least `n` events were accepted (bounded).
    async waitFor(n, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      while (seq < n) {
        if (Date.now() > deadline) throw new Error(`publisher: only ${seq} of ${n} events accepted within ${timeoutMs} ms`);
        await sleep(20);
      }
    },
    /// Stops publishing; resolves with the last accepted number once no request is in flight.
    async stop() {
      running = false;
      await loop;
      return seq;
    },
  };
}

// ----- the recording page -------------------------------------------------------------------

/// The page every reliability scenario runs: it loads the built package and records what a
/// client reports (messages as [seq, id], gaps with their position, errors, status changes).
export const RECORDER_PAGE = `<!doctype html>
<meta charset="utf-8">
<title>holdfast reliability</title>
<script type="module">
  import * as holdfast from '/pkg/dist/index.js';
  window.holdfast = holdfast;
  // \`tokenFunction\`: the name of a page function (e.g. one exposed by the test) that the
  // client's token provider calls; every call is counted.
  window.startClient = (options, { tokenFunction } = {}) => {
    const rec = { messages: [], gaps: [], errors: [], states: [], others: 0, otherSamples: [], tokenCalls: 0 };
    if (tokenFunction) options = { ...options, token: () => (rec.tokenCalls++, window[tokenFunction]()) };
    const client = holdfast.createClient(options);
    client.on('message', (m) => {
      if (m.type === 'tick' && m.data && typeof m.data.seq === 'number') rec.messages.push([m.data.seq, m.id]);
      else if (rec.others++ < 20) rec.otherSamples.push({ id: m.id, type: m.type, data: typeof m.data === 'string' ? m.data.slice(0, 100) : m.data });
    });
    client.on('gap', (g) => rec.gaps.push({ at: rec.messages.length, reason: g.reason, cursor: g.cursor, oldest: g.oldest }));
    client.on('error', (e) => rec.errors.push({ code: e.code, message: e.message, transport: e.transport, at: Date.now() }));
    client.on('state', (s) => {
      const last = rec.states.at(-1);
      if (!last || last.status !== s.status || last.transport !== s.transport)
        rec.states.push({ status: s.status, transport: s.transport, at: Date.now() });
    });
    window.client = client;
    window.rec = rec;
    return true;
  };
  window.ready = true;
</script>`;

/// Runs in the page before any script: captures the wasm memory (for the soak test) and
/// lets a test move \`Date.now\` forward (a simulated sleep).
const INIT_SCRIPT = `(() => {
  window.__wasmMemories = [];
  // Export names may be minified: take every exported WebAssembly.Memory.
  const keep = (r) => {
    const inst = r && (r.instance || r);
    for (const v of Object.values((inst && inst.exports) || {})) if (v instanceof WebAssembly.Memory) window.__wasmMemories.push(v);
    return r;
  };
  const inst = WebAssembly.instantiate;
  WebAssembly.instantiate = function (...a) { return inst.apply(this, a).then(keep); };
  const stream = WebAssembly.instantiateStreaming;
  if (stream) WebAssembly.instantiateStreaming = function (...a) { return stream.apply(this, a).then(keep); };
  // The package may instantiate synchronously (an inlined module): \`new WebAssembly.Instance\`.
  WebAssembly.Instance = new Proxy(WebAssembly.Instance, { construct(t, a, nt) { return keep(Reflect.construct(t, a, nt)); } });
  const realNow = Date.now.bind(Date);
  window.__clockOffset = 0;
  Date.now = () => realNow() + window.__clockOffset;
  // A test can make the page look hidden (document.visibilityState is read-only).
  window.__visibility = null;
  const desc = Object.getOwnPropertyDescriptor(Document.prototype, 'visibilityState');
  Object.defineProperty(Document.prototype, 'visibilityState', {
    configurable: true,
    get() { return window.__visibility ?? desc.get.call(this); },
  });
  const hidden = Object.getOwnPropertyDescriptor(Document.prototype, 'hidden');
  Object.defineProperty(Document.prototype, 'hidden', {
    configurable: true,
    get() { return window.__visibility ? window.__visibility === 'hidden' : hidden.get.call(this); },
  });
})();`;

/// Console messages the browser itself logs for failed network requests: expected in a
/// fault scenario, not errors of the page.
const NETWORK_NOISE = /WebSocket connection to|Failed to load resource|net::ERR_|ERR_INTERNET_DISCONNECTED|the server responded with a status/i;

/// Opens `url` in a fresh browser context (own localStorage: no remembered rung leaks
/// between scenarios), waits for the recorder, starts a client with `options`.
/// `problems` collects page errors and console errors other than network noise.
export async function openRecorder(browser, url, options, { beforeStart, tokenFunction } = {}) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.addInitScript(INIT_SCRIPT);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !NETWORK_NOISE.test(m.text())) problems.push(`console.error: ${m.text()}`);
  });
  await page.goto(url, { timeout: 20_000 });
  await page.waitForFunction(() => window.ready === true, null, { timeout: 20_000, polling: 50 });
  if (beforeStart) await beforeStart(page, context);
  await page.evaluate(([o, t]) => window.startClient(o, { tokenFunction: t }), [options, tokenFunction]);
  return { page, context, problems, close: () => context.close().catch(() => {}) };
}

/// Waits until `predicate(snapshot)` holds in the page (bounded).
export async function waitForSnapshot(page, predicate, { timeoutMs = 20_000, what = 'the client state' } = {}) {
  try {
    await page.waitForFunction(new Function('s', `return (${predicate})(window.client.snapshot())`), null, {
      timeout: timeoutMs,
      polling: 50,
    });
  } catch (e) {
    const snap = await page.evaluate(() => ({ ...window.client.snapshot(), lastError: window.client.snapshot().lastError?.code })).catch(() => null);
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; snapshot ${JSON.stringify(snap)}`);
  }
}

/// Waits until the client is open (on `transport`, when given).
export function waitOpen(page, transport, timeoutMs = 20_000) {
  const pred = transport
    ? `(s) => s.status === 'open' && s.transport === ${JSON.stringify(transport)}`
    : `(s) => s.status === 'open'`;
  return waitForSnapshot(page, pred, { timeoutMs, what: `the client to be open${transport ? ` on ${transport}` : ''}` });
}

/// Waits until the page received event number `seq` (bounded).
export async function waitForSeq(page, seq, timeoutMs = 20_000) {
  try {
    await page.waitForFunction(
      (n) => window.rec.messages.length > 0 && window.rec.messages[window.rec.messages.length - 1][0] >= n,
      seq,
      { timeout: timeoutMs, polling: 50 },
    );
  } catch {
    const got = await page.evaluate(() => window.rec.messages.at(-1)?.[0] ?? null).catch(() => null);
    throw new Error(`timed out after ${timeoutMs} ms waiting for event ${seq}; the last received is ${got}`);
  }
}

/// Everything the page recorded, plus the client's snapshot and diagnostics, read as the
/// contract (js/src/types.ts `Diagnostics`) describes them: `attempts[].failure` is a
/// HoldfastError (its `code` is the failure class) or null, `notes` are `{at, text}`.
/// `diagnosticsShapeOk` is false when the wrapper hands out something else (the failure
/// classes are still extracted where possible, so the scenario checks its behaviour; one
/// test checks the shape itself).
export async function collect(page) {
  return page.evaluate(() => {
    const snap = window.client.snapshot();
    const d = window.client.diagnostics();
    let shapeOk = Array.isArray(d.attempts) && Array.isArray(d.notes) && d.snapshot === snap;
    let attempts = d.attempts;
    if (attempts.length === 2 && Array.isArray(attempts[0]) && Array.isArray(attempts[1])) {
      attempts = attempts[0];
      shapeOk = false;
    }
    const list = attempts.map((a) => {
      let failure = a.failure;
      let message = null;
      if (failure && typeof failure === 'object' && !Array.isArray(failure)) {
        message = failure.message ?? null;
        if (typeof failure.code !== 'string' || typeof failure.message !== 'string') shapeOk = false;
        failure = failure.code;
      } else if (Array.isArray(failure)) {
        shapeOk = false;
        message = failure[1];
        failure = failure[0];
      } else if (failure !== null) shapeOk = false;
      if (typeof a.transport !== 'string' || typeof a.startedAt !== 'number' || typeof a.probe !== 'boolean') shapeOk = false;
      return { transport: a.transport, probe: !!a.probe, failure: failure ?? null, message, startedAt: a.startedAt, openedAt: a.openedAt ?? null };
    });
    const notes = Array.isArray(d.notes) ? d.notes.map((n) => ({ at: n.at, text: String(n.text) })) : [];
    return {
      messages: window.rec.messages,
      gaps: window.rec.gaps,
      errors: window.rec.errors,
      states: window.rec.states,
      others: window.rec.others,
      otherSamples: window.rec.otherSamples,
      tokenCalls: window.rec.tokenCalls,
      snapshot: { status: snap.status, transport: snap.transport, cursor: snap.cursor, attempt: snap.attempt, lastError: snap.lastError?.code ?? null },
      attempts: list,
      notes,
      diagnosticsShapeOk: shapeOk,
    };
  });
}

/// The failure classes of the attempts in the diagnostics, in order, each once.
export function failureClasses(result) {
  const out = [];
  for (const a of result.attempts) if (a.failure && !out.includes(a.failure)) out.push(a.failure);
  return out;
}

/// The error codes the client reported through `on('error')`, each once.
export function errorCodes(result) {
  const out = [];
  for (const e of result.errors) if (!out.includes(e.code)) out.push(e.code);
  return out;
}

// ----- the audit ---------------------------------------------------------------------------

/// Checks what the client delivered against what was published.
///
/// - `messages`: [seq, id] in delivery order; `gaps`: [{at}] (position in `messages`).
/// - Every event from `firstOwed` (the first published after the client was open) to
///   `lastSent` must arrive exactly once and in order. Earlier events may arrive (the
///   client subscribed before they were published), but then also without holes.
/// - A hole is excused only right at a reported gap, and only for events `reallyGone(seq)`
///   says the server no longer had; nothing may be missing after the last gap.
/// - `uncertain` numbers (a publish whose answer was lost) are not owed, but still at most once.
export function audit({ messages, gaps = [], firstOwed, lastSent, uncertain = new Set(), reallyGone = () => false }) {
  const seqs = messages.map((m) => m[0]);
  const seen = new Map();
  let duplicates = 0;
  let outOfOrder = 0;
  for (let i = 0; i < seqs.length; i++) {
    const s = seqs[i];
    seen.set(s, (seen.get(s) ?? 0) + 1);
    if (seen.get(s) > 1) duplicates++;
    if (i > 0 && s < seqs[i - 1]) outOfOrder++;
  }
  const gapAt = new Set(gaps.map((g) => g.at));
  const lost = []; // excused: at a gap, really gone
  const missing = []; // not excused
  const owedFrom = seqs.length ? Math.min(firstOwed, seqs[0]) : firstOwed;
  // Walk the owed range in order, knowing at which delivery position each seq arrived.
  const firstPos = new Map();
  seqs.forEach((s, i) => {
    if (!firstPos.has(s)) firstPos.set(s, i);
  });
  let pos = 0; // position in `messages` reached so far
  for (let s = owedFrom; s <= lastSent; s++) {
    if (firstPos.has(s)) {
      pos = firstPos.get(s) + 1;
      continue;
    }
    if (uncertain.has(s)) continue;
    // Not delivered: excused if a gap was reported at the point where it should have come
    // (before the next delivered event) and the server really had lost it.
    let nextPos = seqs.length;
    for (let t = s + 1; t <= lastSent; t++) {
      if (firstPos.has(t)) {
        nextPos = firstPos.get(t);
        break;
      }
    }
    let excused = false;
    for (const g of gapAt) if (g >= pos && g <= nextPos) excused = true;
    if (excused && reallyGone(s)) lost.push(s);
    else missing.push(s);
  }
  return {
    sent: Math.max(0, lastSent - owedFrom + 1 - [...uncertain].filter((u) => u >= owedFrom && u <= lastSent).length),
    received: seqs.length,
    duplicates,
    outOfOrder,
    missing: missing.length,
    missingSeqs: missing.slice(0, 20),
    lost: lost.length,
    gaps: gaps.length,
  };
}

/// The line every scenario prints.
export function report(n, a, finalRung, classes, extra = '') {
  const line =
    `# scenario ${n}: sent ${a.sent}, received ${a.received}, duplicates ${a.duplicates}, missing ${a.missing}, ` +
    `final rung ${finalRung}, failure classes [${classes.join(', ')}]` +
    (a.outOfOrder ? `, out of order ${a.outOfOrder}` : '') +
    (a.gaps ? `, gaps ${a.gaps} (${a.lost} events really gone)` : '') +
    (extra ? `; ${extra}` : '');
  console.log(line);
  return line;
}

/// The end of every scenario: stops the publisher, waits (bounded) until the page has the
/// last accepted event, lets stragglers (repeats) arrive, then collects and audits.
export async function finish(page, publisher, { firstOwed, reallyGone, settleMs = 400, timeoutMs = 30_000 } = {}) {
  const lastSent = await publisher.stop();
  let waitError = null;
  try {
    await waitForSeq(page, lastSent, timeoutMs);
  } catch (e) {
    waitError = e; // audited below: the missing events are reported, not just a timeout
  }
  await sleep(settleMs);
  const result = await collect(page);
  const a = audit({
    messages: result.messages,
    gaps: result.gaps,
    firstOwed,
    lastSent,
    uncertain: publisher.uncertain,
    reallyGone,
  });
  return { result, audit: a, lastSent, waitError };
}

/// Asserts the audit: events were owed (a scenario that published nothing while the client
/// was open proves nothing), nothing missing (except really gone events at a reported gap),
/// nothing repeated, nothing out of order.
export function assertDelivery(assert, a, { gaps = 0 } = {}) {
  assert.ok(a.sent > 0, `events were published while the client was open (${JSON.stringify(a)})`);
  assert.equal(a.duplicates, 0, `no event delivered twice (${JSON.stringify(a)})`);
  assert.equal(a.outOfOrder, 0, `events in order (${JSON.stringify(a)})`);
  assert.equal(a.missing, 0, `no event missing (missing: ${JSON.stringify(a.missingSeqs)})`);
  assert.equal(a.gaps, gaps, `${gaps} gap(s) reported (${JSON.stringify(a)})`);
  if (gaps === 0) assert.equal(a.lost, 0);
}

/// The first event number owed to a client observed open now: the batch in flight may have
/// been stored before the client subscribed, the one after it cannot have been.
export function owedFrom(publisher, perTick = 1) {
  return publisher.next() + perTick;
}
