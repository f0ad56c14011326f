// The in-page half of the benchmarks: one function per measurement, called by
// bench/run.mjs through `Runtime.evaluate` and returning plain JSON.
//
// Contract: every function resolves with its numbers or rejects with a message saying how far
// it got; each has a bounded wait. Throughput is timed from the first event the application
// callback receives to the n-th, so connection set-up is excluded on every side alike, and
// every callback does the same small amount of work with the event (reads `data.seq`). The
// Holdfast package is imported only by the Holdfast functions, so native pages never load it.

// Capture the wasm memory of whatever module the page instantiates (the Holdfast engine), so
// its size can be added to the JS heap in the memory case.
const wasmMemories = [];
for (const name of ['instantiate', 'instantiateStreaming']) {
  const original = WebAssembly[name];
  WebAssembly[name] = async function (...args) {
    const result = await original.apply(this, args);
    const instance = result.instance ?? result;
    for (const v of Object.values(instance.exports ?? {})) if (v instanceof WebAssembly.Memory) wasmMemories.push(v);
    return result;
  };
}

let sink = 0; // keeps the per-event work observable
const keep = []; // clients and sockets kept open until the page closes (memory case)

const loadHoldfast = (pkg = 'pkg') => import(`/${pkg}/dist/index.js`);
const wsBase = () => location.origin.replace(/^http/, 'ws');

/// A counter that resolves after `n` events and rejects after `timeoutMs`.
function counter(n, timeoutMs, what) {
  let count = 0;
  let t0 = 0;
  let last = 0; // events carry seq 1..n: every case also checks order and completeness
  let misordered = 0;
  let resolve;
  let reject;
  const done = new Promise((a, b) => {
    resolve = a;
    reject = b;
  });
  const timer = setTimeout(() => reject(new Error(`${what}: timed out after ${timeoutMs} ms with ${count}/${n} events`)), timeoutMs);
  return {
    done,
    fail(e) {
      clearTimeout(timer);
      reject(e instanceof Error ? e : new Error(String(e)));
    },
    /// Counts one event; returns true on the n-th.
    tick(seq) {
      sink += seq | 0;
      if (seq !== last + 1) misordered++;
      last = seq;
      if (count === 0) t0 = performance.now();
      count++;
      if (count === n) {
        const ms = performance.now() - t0;
        clearTimeout(timer);
        if (misordered) reject(new Error(`${what}: ${misordered} of ${n} events arrived out of order, duplicated or after a gap`));
        else resolve({ n, ms, perSec: n > 1 ? ((n - 1) * 1000) / ms : 0 });
        return true;
      }
      return false;
    },
    get count() {
      return count;
    },
  };
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

// A gate between the page and the network, installed only by the Holdfast catch-up cases
// (`installGate`): `gateCut()` closes every WebSocket and fetch the page has open and makes
// new ones fail at once until `gateOpen()`. The client cannot start from an arbitrary
// cursor yet, so a catch-up is produced the way it happens in the field: the client is cut
// off, events are published meanwhile, and it resumes from its cursor when the network is
// back. The wrappers act only when a connection opens; frames and chunks are untouched.
let gated = false;
const openSockets = new Set();
const openFetches = new Set();
function installGate() {
  if (window.__gateInstalled) return;
  window.__gateInstalled = true;
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(url, protocols) {
      super(gated ? 'ws://127.0.0.1:9/' : url, protocols);
      openSockets.add(this);
      this.addEventListener('close', () => openSockets.delete(this));
    }
  };
  const nativeFetch = window.fetch.bind(window);
  window.fetch = (input, init = {}) => {
    if (gated) return Promise.reject(new TypeError('Failed to fetch (bench gate closed)'));
    const ac = new AbortController();
    const outer = init.signal ?? (input instanceof Request ? input.signal : undefined);
    if (outer) {
      if (outer.aborted) ac.abort(outer.reason);
      else outer.addEventListener('abort', () => ac.abort(outer.reason), { once: true });
    }
    openFetches.add(ac);
    const done = () => openFetches.delete(ac);
    return nativeFetch(input, { ...init, signal: ac.signal }).then(
      (res) => {
        if (res.body) {
          // A streaming body stays open until it ends; forget it then (or when cut).
        } else done();
        return res;
      },
      (e) => {
        done();
        throw e;
      },
    );
  };
}

function gateCut() {
  gated = true;
  for (const ws of openSockets) ws.close();
  for (const ac of openFetches) ac.abort(new DOMException('cut by the bench gate', 'AbortError'));
  openFetches.clear();
}

function gateOpen() {
  gated = false;
}

/// Holdfast catch-up, step 1: a client on `transports`, live on `topic`, with short backoff.
/// Resolves once it is open; the driver then publishes one primer event.
async function hfOpen({ topic, transports, eventSource = false, gate = true, pkg }) {
  if (gate) installGate();
  const { createClient } = await loadHoldfast(pkg);
  const client = createClient({
    url: '/realtime', params: { topic }, transports, eventSource, remember: false,
    backoff: { initialMs: 50, maxMs: 100 },
  });
  const state = { client, primed: false, counter: null, lastError: null, workaround: false };
  window.__hf = state;
  client.on('error', (e) => (state.lastError = e));
  client.on('gap', (g) => state.counter?.fail(new Error(`gap reported: ${g.reason}`)));
  client.on('message', (m) => {
    if (m.data.seq === 0) state.primed = true;
    else state.counter?.tick(m.data.seq);
  });
  const transport = await whenOpen(client, 10_000);
  return { transport };
}

/// The diagnostics' attempt list (older builds nested it as `[attempts, notes]`).
const attemptsOf = (client) => {
  const a = client.diagnostics().attempts ?? [];
  return Array.isArray(a[0]) ? a[0] : a;
};

/// Holdfast from the start of `topic`'s history (`since: '0'`), like the native baselines.
/// `probe` only reports whether the option reached the first request's URL.
async function hfSince({ topic, n, transports, pkg, probe = false, timeoutMs = 60_000 }) {
  const { createClient } = await loadHoldfast(pkg);
  const c = counter(n, timeoutMs, 'holdfast');
  let lastError = null;
  const client = createClient({ url: '/realtime', params: { topic }, since: '0', transports, remember: false });
  if (probe) {
    try {
      await until(() => attemptsOf(client)[0]?.url, 5_000, 'first attempt');
      return { since: /[?&]since=0(&|$)/.test(attemptsOf(client)[0].url) };
    } finally {
      client.close();
    }
  }
  client.on('error', (e) => (lastError = e));
  client.on('gap', (g) => c.fail(new Error(`gap reported: ${g.reason}`)));
  client.on('message', (m) => c.tick(m.data.seq));
  try {
    return { ...(await c.done), transport: client.snapshot().transport };
  } catch (e) {
    const s = client.snapshot();
    throw new Error(`${e.message}; status ${s.status}${lastError ? `; last error ${lastError.code}: ${lastError.message}` : ''}`);
  } finally {
    client.close();
  }
}

/// Waits for `pred()` with a bounded poll.
async function until(pred, timeoutMs, what) {
  const t0 = performance.now();
  while (!pred()) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`${what} not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/// Step 2: the primer event arrived (the client has a cursor); cut the network.
async function hfArm() {
  const s = window.__hf;
  await until(() => s.primed, 10_000, 'primer event');
  gateCut();
  await until(() => s.client.snapshot().status !== 'open', 10_000, 'client noticing the cut');
  return { status: s.client.snapshot().status };
}

/// Step 3 (after the driver published n events): open the network; resolves at the first
/// event (so a CPU profile can start there). Without it, `hfRun` opens the network itself.
async function hfResume({ n, timeoutMs = 60_000 }) {
  const s = window.__hf;
  s.counter = counter(n, timeoutMs, 'holdfast');
  gateOpen();
  await Promise.race([until(() => s.counter.count > 0, timeoutMs, 'first event after the cut'), s.counter.done]);
  return {};
}

/// Step 4: counts n events (from the first one) and reports the rate.
async function hfRun({ n, timeoutMs = 60_000, keepOpen = false }) {
  const s = window.__hf;
  if (!s.counter) {
    s.counter = counter(n, timeoutMs, 'holdfast');
    gateOpen();
  }
  const closed = s.client.subscribe(() => {
    const snap = s.client.snapshot();
    if (snap.status === 'closed') s.counter.fail(new Error('client closed'));
  });
  try {
    const r = await s.counter.done;
    return { ...r, transport: s.client.snapshot().transport };
  } catch (e) {
    const snap = s.client.snapshot();
    throw new Error(`${e.message}; status ${snap.status}${s.lastError ? `; last error ${s.lastError.code}: ${s.lastError.message}` : ''}`);
  } finally {
    closed();
    if (!keepOpen) s.client.close();
  }
}

/// Native WebSocket + JSON.parse on the same endpoint and frames (objects or arrays).
async function wsNative({ topic, n, timeoutMs = 60_000, keepOpen = false }) {
  const c = counter(n, timeoutMs, 'native WebSocket');
  const ws = new WebSocket(`${wsBase()}/realtime/ws?topic=${topic}&since=0`);
  ws.onerror = () => c.fail(new Error('native WebSocket error'));
  ws.onmessage = (ev) => {
    const v = JSON.parse(ev.data);
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) if (c.tick(v[i].data.seq)) break;
    } else if (v.id !== undefined) {
      c.tick(v.data.seq);
    }
  };
  const r = await c.done.finally(() => keepOpen || ws.close());
  if (keepOpen) keep.push(ws);
  return r;
}

/// Native WebSocket, live (no cursor): resolves once the hello arrived; `nativeRun` counts.
async function nativeOpen({ topic }) {
  const ws = new WebSocket(`${wsBase()}/realtime/ws?topic=${topic}`);
  const state = { ws, counter: null };
  window.__native = state;
  ws.onmessage = (ev) => {
    const v = JSON.parse(ev.data);
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) state.counter?.tick(v[i].data.seq);
    } else if (v.id !== undefined) {
      state.counter?.tick(v.data.seq);
    } else if (v.type === 'hello') {
      state.hello = true;
    }
  };
  await until(() => state.hello, 10_000, 'native hello');
  return {};
}

async function nativeRun({ n, timeoutMs = 60_000, keepOpen = false }) {
  const s = window.__native;
  s.counter = counter(n, timeoutMs, 'native WebSocket');
  s.ws.onerror = () => s.counter.fail(new Error('native WebSocket error'));
  const r = await s.counter.done.finally(() => keepOpen || s.ws.close());
  if (keepOpen) keep.push(s.ws);
  return r;
}

/// SSE from a `fetch` stream, parsed in plain JS (what a careful hand-written client does).
async function sseFetch({ topic, n, timeoutMs = 60_000 }) {
  const c = counter(n, timeoutMs, 'fetch-stream SSE');
  const ctrl = new AbortController();
  const read = (async () => {
    const res = await fetch(`/realtime/sse?topic=${topic}&since=0`, { signal: ctrl.signal });
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error('stream ended');
      buf += value;
      let start = 0;
      let end;
      while ((end = buf.indexOf('\n\n', start)) !== -1) {
        const block = buf.slice(start, end);
        start = end + 2;
        let event = 'message';
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('data:')) data = line.slice(line[5] === ' ' ? 6 : 5);
          else if (line.startsWith('event:')) event = line.slice(line[6] === ' ' ? 7 : 6);
        }
        if (event !== 'tick') continue;
        if (c.tick(JSON.parse(data).seq)) return;
      }
      buf = buf.slice(start);
    }
  })();
  read.catch((e) => e.name !== 'AbortError' && c.fail(e));
  return c.done.finally(() => ctrl.abort());
}

/// The browser's EventSource (events are named after their type, here `tick`).
async function sseNative({ topic, n, timeoutMs = 60_000 }) {
  const c = counter(n, timeoutMs, 'EventSource');
  const es = new EventSource(`/realtime/sse?topic=${topic}&since=0`);
  es.addEventListener('tick', (e) => c.tick(JSON.parse(e.data).seq));
  es.onerror = () => c.fail(new Error('EventSource error'));
  return c.done.finally(() => es.close());
}

/// A plain fetch loop over the polling endpoint, same batch size as the server gives Holdfast.
async function pollFetch({ topic, n, timeoutMs = 60_000 }) {
  const c = counter(n, timeoutMs, 'fetch polling');
  let cursor = '0';
  let stop = false;
  (async () => {
    while (!stop) {
      const res = await fetch(`/realtime/poll?topic=${topic}&since=${encodeURIComponent(cursor)}&wait=0`);
      if (!res.ok) throw new Error(`poll: HTTP ${res.status}`);
      const body = await res.json();
      for (const e of body.events) if (c.tick(e.data.seq)) return;
      cursor = body.cursor;
    }
  })().catch((e) => c.fail(e));
  return c.done.finally(() => (stop = true));
}

/// Waits until a Holdfast client reports `open` on a rung.
function whenOpen(client, timeoutMs) {
  return new Promise((resolve, reject) => {
    const check = () => {
      const s = client.snapshot();
      if (s.status === 'open' && s.transport) {
        off();
        clearTimeout(t);
        resolve(s.transport);
      }
    };
    const off = client.subscribe(check);
    const t = setTimeout(() => {
      off();
      const s = client.snapshot();
      reject(new Error(`not open after ${timeoutMs} ms (status ${s.status}${s.lastError ? `, ${s.lastError.code}` : ''})`));
    }, timeoutMs);
    check();
  });
}

// Round trips are timed in a cross-origin-isolated page (the driver serves it with COOP and
// COEP), where performance.now() has microsecond resolution instead of 100 µs.
const summarize = (times) => {
  const s = [...times].sort((a, b) => a - b);
  return { median: percentile(s, 50), p99: percentile(s, 99), count: s.length, isolated: self.crossOriginIsolated === true };
};

/// Holdfast send → ack over the WebSocket rung.
async function hfRtt({ topic, count, server = location.origin, warmup = 100, timeoutMs = 60_000, pkg }) {
  const { createClient } = await loadHoldfast(pkg);
  const client = createClient({ url: `${server}/realtime`, params: { topic }, transports: ['websocket'], remember: false });
  try {
    await whenOpen(client, 10_000);
    const deadline = performance.now() + timeoutMs;
    const times = [];
    for (let i = 0; i < warmup + count; i++) {
      const t0 = performance.now();
      await client.send({ i });
      if (i >= warmup) times.push(performance.now() - t0);
      if (performance.now() > deadline) throw new Error(`timed out after ${times.length} round trips`);
    }
    return summarize(times);
  } finally {
    client.close();
  }
}

/// Native WebSocket round trips: `{"type":"ping"}` → pong, or a `send` frame → ack.
async function wsRtt({ topic, count, server = location.origin, warmup = 100, kind = 'ping', timeoutMs = 60_000 }) {
  const ws = new WebSocket(`${server.replace(/^http/, 'ws')}/realtime/ws?topic=${topic}`);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error('native WebSocket error'));
  });
  let waiting = null;
  ws.onmessage = (ev) => {
    const v = JSON.parse(ev.data);
    if (waiting && (v.type === 'pong' || v.type === 'ack')) {
      const w = waiting;
      waiting = null;
      w();
    }
  };
  try {
    const deadline = performance.now() + timeoutMs;
    const times = [];
    for (let i = 0; i < warmup + count; i++) {
      const t0 = performance.now();
      await new Promise((resolve) => {
        waiting = resolve;
        ws.send(kind === 'ping' ? '{"type":"ping"}' : JSON.stringify({ type: 'send', id: `m-${i}-${Math.random()}`, data: { i } }));
      });
      if (i >= warmup) times.push(performance.now() - t0);
      if (performance.now() > deadline) throw new Error(`timed out after ${times.length} round trips`);
    }
    return summarize(times);
  } finally {
    ws.close();
  }
}

/// Time from createClient to the first event, with the page possibly behind the fault
/// proxy; the driver publishes an event every few ms meanwhile. The wasm module is loaded
/// beforehand (a client on the polling rung, closed at once), so only connecting is timed.
async function hfFirstEvent({ topic, timeoutMs = 15_000 }) {
  const { createClient } = await loadHoldfast();
  const warm = createClient({ url: '/realtime', params: { topic: 'warm' }, transports: ['polling'], remember: false });
  await new Promise((r) => setTimeout(r, 300));
  warm.close();
  const t0 = performance.now();
  const client = createClient({ url: '/realtime', params: { topic }, remember: false });
  try {
    return await new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        const attempts = attemptsOf(client).map((a) => `${a.transport}:${a.failure ?? 'ok'}`).join(', ');
        reject(new Error(`no event within ${timeoutMs} ms; attempts: ${attempts || 'none'}`));
      }, timeoutMs);
      client.on('message', () => {
        clearTimeout(t);
        resolve({ ms: performance.now() - t0, transport: client.snapshot().transport });
      });
    });
  } finally {
    client.close();
  }
}

/// Offline case, step 1: a live Holdfast client on the WebSocket rung that counts events.
async function hfLiveStart({ topic }) {
  const { createClient } = await loadHoldfast();
  const client = createClient({ url: '/realtime', params: { topic }, remember: false });
  const state = { count: 0, lastAt: 0, onlineAt: null, markAt: null, client };
  window.__live = state;
  addEventListener('online', () => (state.onlineAt = performance.now()));
  client.on('message', (m) => {
    sink += m.data.seq | 0;
    state.count++;
    state.lastAt = performance.now();
  });
  const transport = await whenOpen(client, 10_000);
  return { transport };
}

/// Offline case, step 2 (after going online): ms from the `online` event to the n-th event.
async function hfLiveCaughtUp({ n, timeoutMs = 30_000 }) {
  const s = window.__live;
  const t0 = performance.now();
  while (s.count < n) {
    if (performance.now() - t0 > timeoutMs) {
      throw new Error(`caught up ${s.count}/${n} events after ${timeoutMs} ms (status ${s.client.snapshot().status})`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  const from = s.onlineAt ?? s.markAt;
  return { ms: s.lastAt - from, transport: s.client.snapshot().transport, onlineEvent: s.onlineAt !== null, duringOffline: s.countAtMark - 1 };
}

/// Bytes of wasm linear memory the page holds.
function wasmBytes() {
  return wasmMemories.reduce((sum, m) => sum + m.buffer.byteLength, 0);
}

/// socket.io-client over WebSocket against the driver's socket.io server.
async function sioStream({ url, n, timeoutMs = 60_000 }) {
  const { io } = await import('/vendor/socket.io.js');
  const c = counter(n, timeoutMs, 'socket.io-client');
  const socket = io(url, { transports: ['websocket'], reconnection: false });
  socket.on('connect_error', (e) => c.fail(new Error(`socket.io connect_error: ${e.message}`)));
  socket.on('tick', (d) => c.tick(d.seq));
  socket.on('connect', () => socket.emit('go', n));
  return c.done.finally(() => socket.close());
}

/// Native WebSocket against the driver's plain `ws` server sending the same payloads.
async function wsNodeStream({ url, n, timeoutMs = 60_000 }) {
  const c = counter(n, timeoutMs, 'native WebSocket (node ws server)');
  const ws = new WebSocket(url);
  ws.onerror = () => c.fail(new Error('native WebSocket error'));
  ws.onopen = () => ws.send(`go ${n}`);
  ws.onmessage = (ev) => c.tick(JSON.parse(ev.data).data.seq);
  return c.done.finally(() => ws.close());
}

window.bench = {
  hfSince, hfOpen, hfArm, hfResume, hfRun, wsNative, nativeOpen, nativeRun, sseFetch, sseNative, pollFetch, hfRtt, wsRtt,
  hfFirstEvent, hfLiveStart, hfLiveCaughtUp, wasmBytes, sioStream, wsNodeStream,
  sink: () => sink,
};
