// Soak: 1,000,000 events through one client in Chromium, published in bulk so the client is
// always behind and the server catches it up in batched frames. After 100,000 and after
// 1,000,000 events the page is garbage-collected and its JS heap and the wasm module's
// memory are measured: the second reading must stay within a bound of the first (the
// client's buffers, dedup window and diagnostics do not grow with the number of events).
// The bound is relative (memory after 10× the events), never a wall-clock threshold.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, makeSite, startServer, PUBLISH_KEY } from './harness.mjs';
import { sleep } from './faults.mjs';

const TOTAL = 1_000_000;
const CHECKPOINT = 100_000;
const BATCH = 1000;
const AHEAD = 20_000; // the most the publisher runs ahead of the client

// The page keeps counts only (storing a million events would measure the test, not the client).
const SOAK_PAGE = `<!doctype html>
<meta charset="utf-8">
<title>soak</title>
<script>
  window.__wasmMemories = [];
  // Export names may be minified: take every exported WebAssembly.Memory.
  const keep = (r) => {
    const i = r && (r.instance || r);
    for (const v of Object.values((i && i.exports) || {})) if (v instanceof WebAssembly.Memory) window.__wasmMemories.push(v);
    return r;
  };
  const inst = WebAssembly.instantiate;
  WebAssembly.instantiate = function (...a) { return inst.apply(this, a).then(keep); };
  const stream = WebAssembly.instantiateStreaming;
  if (stream) WebAssembly.instantiateStreaming = function (...a) { return stream.apply(this, a).then(keep); };
  // The package may instantiate synchronously (an inlined module): \`new WebAssembly.Instance\`.
  WebAssembly.Instance = new Proxy(WebAssembly.Instance, { construct(t, a, nt) { return keep(Reflect.construct(t, a, nt)); } });
</script>
<script type="module">
  import { createClient } from '/pkg/dist/index.js';
  const topic = new URLSearchParams(location.search).get('topic');
  const s = (window.soak = { count: 0, last: 0, duplicates: 0, outOfOrder: 0, missing: 0, gaps: 0, errors: [] });
  window.client = createClient({ url: '/realtime', params: { topic }, remember: false, probe: false });
  window.client.on('message', (m) => {
    const seq = m.data.seq;
    s.count++;
    if (seq <= s.last) { if (seq === s.last) s.duplicates++; else s.outOfOrder++; return; }
    if (s.last && seq > s.last + 1) s.missing += seq - s.last - 1;
    s.last = seq;
  });
  window.client.on('gap', () => s.gaps++);
  window.client.on('error', (e) => s.errors.length < 20 && s.errors.push(e.code));
</script>`;

let site, server, browser;

before(async () => {
  site = makeSite({ 'soak.html': SOAK_PAGE });
  server = await startServer([
    '--static', site.dir,
    '--history-count', '100000',
    '--history-secs', '0',
    '--rate-per-ip', '0',
    '--conns-per-ip', '0',
    '--max-frame-bytes', String(4 << 20),
  ]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  site?.remove();
});

async function publishBatch(topic, from, n) {
  const body = [];
  for (let i = 0; i < n; i++) body.push({ type: 'tick', data: { seq: from + i } });
  const res = await fetch(`${server.url}/realtime/publish?topic=${topic}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${PUBLISH_KEY}` },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  if (!res.ok) throw new Error(`publish: HTTP ${res.status} ${await res.text()}`);
  await res.arrayBuffer();
}

/// Publishes up to event `upTo`, never more than AHEAD events ahead of the page, and waits
/// until the page has them all. Every wait is bounded by progress: 60 s without a single
/// new event fails.
async function pump(page, topic, state, upTo) {
  let lastProgress = Date.now();
  let seen = -1;
  while (true) {
    const count = await page.evaluate(() => window.soak.count);
    if (count !== seen) {
      seen = count;
      lastProgress = Date.now();
    }
    if (Date.now() - lastProgress > 60_000) throw new Error(`no progress for 60 s at ${count} events`);
    if (state.published >= upTo && count >= upTo) return;
    if (state.published < upTo && state.published - count < AHEAD) {
      // Two batches in flight keep the server busy without racing the order.
      const n = Math.min(BATCH, upTo - state.published);
      await publishBatch(topic, state.published + 1, n);
      state.published += n;
      continue;
    }
    await sleep(50);
  }
}

async function measure(page, cdp) {
  for (let i = 0; i < 3; i++) await cdp.send('HeapProfiler.collectGarbage');
  await sleep(200);
  await cdp.send('HeapProfiler.collectGarbage');
  const heap = await cdp.send('Runtime.getHeapUsage');
  const wasm = await page.evaluate(() => window.__wasmMemories.reduce((n, m) => n + m.buffer.byteLength, 0));
  return { heap: heap.usedSize, wasm };
}

const mb = (n) => `${(n / 1048576).toFixed(1)} MiB`;

test('a million events pass through one client in order, each once, with memory bounded by the 100,000-event reading', { timeout: 900_000 }, async () => {
  const topic = 'soak';
  const page = await browser.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(e.message));
  try {
    await page.goto(`${server.url}/soak.html?topic=${topic}`);
    await page.waitForFunction(() => window.client?.snapshot().status === 'open', null, { timeout: 20_000, polling: 50 });
    const cdp = await page.context().newCDPSession(page);
    const state = { published: 0 };
    const t0 = Date.now();
    await pump(page, topic, state, CHECKPOINT);
    const at100k = await measure(page, cdp);
    const t1 = Date.now();
    await pump(page, topic, state, TOTAL);
    const at1m = await measure(page, cdp);
    const t2 = Date.now();
    await sleep(300);
    const s = await page.evaluate(() => ({ ...window.soak, transport: window.client.snapshot().transport }));
    console.log(
      `# soak: sent ${TOTAL}, received ${s.count}, duplicates ${s.duplicates}, missing ${s.missing}, out of order ${s.outOfOrder}, ` +
        `gaps ${s.gaps}, final rung ${s.transport}, errors [${s.errors}]; ` +
        `after 100k: JS heap ${mb(at100k.heap)}, wasm ${mb(at100k.wasm)}; after 1M: JS heap ${mb(at1m.heap)}, wasm ${mb(at1m.wasm)}; ` +
        `${Math.round(CHECKPOINT / ((t1 - t0) / 1000))} then ${Math.round((TOTAL - CHECKPOINT) / ((t2 - t1) / 1000))} events/s`,
    );
    assert.equal(s.count, TOTAL, 'every event delivered');
    assert.equal(s.last, TOTAL);
    assert.deepEqual({ duplicates: s.duplicates, missing: s.missing, outOfOrder: s.outOfOrder, gaps: s.gaps }, { duplicates: 0, missing: 0, outOfOrder: 0, gaps: 0 });
    assert.deepEqual(s.errors, [], 'no error on the way');
    assert.equal(s.transport, 'websocket');
    // Ten times the events may not cost more than half again the memory (plus 2 MiB of
    // allocator slack): anything kept per event would grow about tenfold.
    assert.ok(at1m.heap <= at100k.heap * 1.5 + (2 << 20), `JS heap bounded: ${mb(at100k.heap)} -> ${mb(at1m.heap)}`);
    assert.ok(at1m.wasm <= at100k.wasm * 1.5 + (2 << 20), `wasm memory bounded: ${mb(at100k.wasm)} -> ${mb(at1m.wasm)}`);
    assert.ok(at100k.wasm > 0, 'the wasm memory was found');
    assert.deepEqual(problems, []);
    await page.evaluate(() => window.client.close());
  } finally {
    await page.context().close();
  }
});
