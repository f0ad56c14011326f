// `cargo xtask bench`: Holdfast against the browser's own APIs and the JavaScript peers, in
// one run, in headless Chromium driven over the raw DevTools protocol (bench/cdp.mjs).
//
// Contract: every case runs `--runs` times, Holdfast and its baselines alternating, each run
// in a fresh browser context; the table shows medians and the ratio to the native baseline.
// A case that fails prints `n/a (reason)` and the others still run. All servers bind
// 127.0.0.1 on ports the OS picks and are stopped at the end, whatever happened.
//
// Environment (set by `cargo xtask bench`):
//   HOLDFAST_SERVER_BIN       release holdfast-server
//   HOLDFAST_PACKAGE_DIR      the built npm package (empty: the package did not build)
//   HOLDFAST_FAULT_PROXY_BIN  holdfast-fault-proxy (empty: the fault cases are n/a)
//   HOLDFAST_SIZE_FLOOR_DIR   the engine alone, built by `cargo xtask size-floor` (empty: n/a)
//   CHROMIUM                  browser binary (default /usr/bin/chromium)
// Flags: --runs N (default 5), --only a,b (case ids: ws1 batch sse poll rtt first offline
//        memory sio size), --out FILE (markdown report), --doc BENCHMARKS.md (replace the
//        table between its markers), --profile ws1,sse (CPU profile of those Holdfast runs),
//        --compare DIR (a second package build, e.g. with a candidate change: its
//        throughput runs are interleaved with the others and get their own rows),
//        --quick (fewer events and runs, for trying the harness).

import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { gzipSync, brotliCompressSync, constants as zc } from 'node:zlib';
import { launchChromium, openPage } from './cdp.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');

// ---------------------------------------------------------------- options

const argv = process.argv.slice(2);
const flag = (name) => {
  const i = argv.indexOf(name);
  return i === -1 ? undefined : argv[i + 1];
};
const quick = argv.includes('--quick');
const RUNS = Number(flag('--runs') ?? (quick ? 2 : 5));
const ONLY = flag('--only')?.split(',');
const OUT = flag('--out');
const DOC = flag('--doc'); // BENCHMARKS.md: the table between its markers is replaced
const PROFILE = flag('--profile')?.split(','); // case ids whose Holdfast runs get a CPU profile
const COMPARE = flag('--compare'); // a second built package (its dir): A/B rows for the throughput cases
const SIZE = {
  frame1: quick ? 10_000 : 40_000, // 1 event per frame
  batch: 100_000, // catch-up, server batching
  stream: quick ? 50_000 : 200_000, // SSE and polling
  mem: quick ? 100_000 : 1_000_000,
  rtt: quick ? 300 : 2_000,
  offline: 10_000,
  offlineSecs: quick ? 3 : 10,
  sio: quick ? 10_000 : 40_000,
};
const PAD = 'x'.repeat(27); // makes each event frame about 100 bytes on the wire

const env = (name) => process.env[name] || '';
const SERVER_BIN = env('HOLDFAST_SERVER_BIN');
const PACKAGE_DIR = env('HOLDFAST_PACKAGE_DIR');
const PROXY_BIN = env('HOLDFAST_FAULT_PROXY_BIN');
const SIZE_FLOOR_DIR = env('HOLDFAST_SIZE_FLOOR_DIR');
if (!SERVER_BIN) throw new Error('HOLDFAST_SERVER_BIN is not set: run through `cargo xtask bench`');

const log = (...a) => console.error('[bench]', ...a);
let methodNote = '';
const cleanups = [];

// ---------------------------------------------------------------- processes

/// Spawns a process and resolves with the first stdout match of `pattern` (its group 1).
function spawnUntil(bin, args, pattern, what) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  cleanups.push(async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(t);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start within 30 s`)), 30_000);
    child.once('exit', (code) => reject(new Error(`${what} exited early with ${code}`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = line.match(pattern);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
}

const startServer = (site, extra = []) =>
  spawnUntil(
    SERVER_BIN,
    ['--host', '127.0.0.1', '--port', '0', '--static', site, '--rate-per-ip', '0', '--conns-per-ip', '0',
      '--history-count', String(Math.max(SIZE.stream, SIZE.batch) + 10), '--history-secs', '0', ...extra],
    /listening on (http:\/\/\S+)/,
    'holdfast-server',
  );

async function publish(server, topic, total, from = 1, type = 'tick') {
  const batches = [];
  for (let s = from; s < from + total; s += 1000) {
    const events = [];
    for (let i = s; i < Math.min(s + 1000, from + total); i++) events.push({ type, data: { seq: i, pad: PAD } });
    batches.push(events);
  }
  let next = 0;
  const worker = async () => {
    while (next < batches.length) {
      const body = JSON.stringify(batches[next++]);
      const res = await fetch(`${server}/realtime/publish?topic=${topic}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      });
      if (!res.ok) throw new Error(`publish to ${topic}: HTTP ${res.status} ${await res.text()}`);
    }
  };
  // Order matters within a topic: one request at a time.
  await worker();
}

/// socket.io server and a plain `ws` server that both push `n` events, one per frame, when a
/// client asks; the same payload as the Holdfast cases.
async function startPeerServers() {
  const { Server } = await import('socket.io');
  const { WebSocketServer } = await import('ws');
  const http = createServer();
  const io = new Server(http, { cors: { origin: '*' }, transports: ['websocket'], perMessageDeflate: false });
  io.on('connection', (socket) => {
    socket.on('go', (n) => {
      let seq = 1;
      const pump = () => {
        if (socket.disconnected) return;
        const end = Math.min(n + 1, seq + 500);
        for (; seq < end; seq++) socket.emit('tick', { seq, pad: PAD });
        if (seq <= n) setImmediate(pump);
      };
      pump();
    });
  });
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  http.on('upgrade', (req, sock, head) => {
    if (req.url.startsWith('/native')) wss.handleUpgrade(req, sock, head, (ws) => wss.emit('connection', ws));
  });
  wss.on('connection', (ws) => {
    ws.on('message', (m) => {
      const n = Number(String(m).split(' ')[1]);
      let seq = 1;
      const pump = () => {
        if (ws.readyState !== ws.OPEN) return;
        while (seq <= n && ws.bufferedAmount < 1 << 20) {
          ws.send(JSON.stringify({ type: 'tick', data: { seq, pad: PAD } }));
          seq++;
        }
        if (seq <= n) setImmediate(pump);
      };
      pump();
    });
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  cleanups.push(async () => {
    io.close();
    wss.close();
    http.closeAllConnections?.();
    await new Promise((r) => http.close(r));
  });
  const port = http.address().port;
  return { sio: `http://127.0.0.1:${port}`, native: `ws://127.0.0.1:${port}/native` };
}

// ---------------------------------------------------------------- site and sizes

async function buildSite() {
  const esbuild = await import('esbuild');
  const site = mkdtempSync(join(tmpdir(), 'holdfast-bench-site-'));
  cleanups.push(() => rmSync(site, { recursive: true, force: true }));
  cpSync(join(here, 'pages'), site, { recursive: true });
  if (PACKAGE_DIR && existsSync(join(PACKAGE_DIR, 'dist/index.js'))) cpSync(PACKAGE_DIR, join(site, 'pkg'), { recursive: true });
  if (COMPARE) cpSync(COMPARE, join(site, 'pkg-b'), { recursive: true });
  mkdirSync(join(site, 'vendor'), { recursive: true });
  await esbuild.build({
    stdin: { contents: "export { io } from 'socket.io-client';", resolveDir: root },
    bundle: true, minify: true, format: 'esm', platform: 'browser', outfile: join(site, 'vendor/socket.io.js'), logLevel: 'error',
  });
  return site;
}

/// Serves the site with COOP/COEP so the page is cross-origin isolated and its timers have
/// microsecond resolution (the round-trip case). Returns the origin.
async function startIsolatedSite(site) {
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json' };
  const http = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    const file = join(site, path === '/' ? 'index.html' : decodeURIComponent(path));
    if (!file.startsWith(site) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, {
      'content-type': types[file.slice(file.lastIndexOf('.'))] ?? 'application/octet-stream',
      'cross-origin-opener-policy': 'same-origin',
      'cross-origin-embedder-policy': 'require-corp',
      'cross-origin-resource-policy': 'same-origin',
    });
    res.end(readFileSync(file));
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise((r) => (http.closeAllConnections?.(), http.close(r))));
  return `http://127.0.0.1:${http.address().port}`;
}

const compressed = (buf) => ({
  raw: buf.length,
  gzip: gzipSync(buf, { level: 9 }).length,
  brotli: brotliCompressSync(buf, { params: { [zc.BROTLI_PARAM_QUALITY]: 11 } }).length,
});
const add = (a, b) => ({ raw: a.raw + b.raw, gzip: a.gzip + b.gzip, brotli: a.brotli + b.brotli });

/// What a browser downloads for each client, bundled the same way (esbuild, minified, ESM).
async function sizes() {
  const esbuild = await import('esbuild');
  const bundle = async (contents) => {
    const r = await esbuild.build({
      stdin: { contents, resolveDir: root }, bundle: true, minify: true, format: 'esm', platform: 'browser',
      write: false, logLevel: 'error', external: ['*.wasm'],
    });
    return Buffer.from(r.outputFiles[0].contents);
  };
  const rows = [];
  if (PACKAGE_DIR && existsSync(join(PACKAGE_DIR, 'dist/index.js'))) {
    const js = await bundle(`export { createClient } from ${JSON.stringify(join(PACKAGE_DIR, 'dist/index.js'))};`);
    const wasm = readFileSync(join(PACKAGE_DIR, 'dist/holdfast_wasm_bg.wasm'));
    const jsSize = compressed(js);
    const wasmSize = compressed(wasm);
    rows.push({ name: 'Holdfast createClient (JS + wasm)', ...add(jsSize, wasmSize), note: `JS ${fmtKB(jsSize.gzip)} + wasm ${fmtKB(wasmSize.gzip)} gzip` });
  } else {
    rows.push({ name: 'Holdfast createClient (JS + wasm)', na: 'package did not build' });
  }
  const floor = { name: 'Holdfast engine alone (bench/size-floor: no web layer, bindings or wrapper)', own: true };
  if (SIZE_FLOOR_DIR && existsSync(join(SIZE_FLOOR_DIR, 'floor_bg.wasm'))) {
    const jsSize = compressed(readFileSync(join(SIZE_FLOOR_DIR, 'floor.min.js')));
    const wasmSize = compressed(readFileSync(join(SIZE_FLOOR_DIR, 'floor_bg.wasm')));
    rows.push({ ...floor, ...add(jsSize, wasmSize), note: `glue ${fmtKB(jsSize.gzip)} + wasm ${fmtKB(wasmSize.gzip)} gzip: the least a download running this engine can be` });
  } else {
    rows.push({ ...floor, na: 'the size floor did not build' });
  }
  for (const [name, contents] of [
    ['socket.io-client', "export { io } from 'socket.io-client';"],
    ['@microsoft/signalr', "export { HubConnectionBuilder } from '@microsoft/signalr';"],
    ['centrifuge', "export { Centrifuge } from 'centrifuge';"],
  ]) {
    try {
      rows.push({ name, ...compressed(await bundle(contents)) });
    } catch (e) {
      rows.push({ name, na: e.message.split('\n')[0] });
    }
  }
  return rows;
}

// ---------------------------------------------------------------- cases

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fmtKB = (b) => `${(b / 1000).toFixed(1)} KB`;
const fmtRate = (x) => `${Math.round(x).toLocaleString('en-US')}/s`;
const fmtMs = (x) => (x < 10 ? `${x.toFixed(2)} ms` : `${Math.round(x).toLocaleString('en-US')} ms`);
const fmtMB = (x) => `${(x / 1048576).toFixed(2)} MB`;

/// Opens the bench page on `origin`, runs `fn(page)`, always closes the page.
async function withPage(browser, origin, fn) {
  const page = await openPage(browser, `${origin}/index.html`);
  try {
    return await fn(page);
  } catch (e) {
    if (page.problems.length) e.message += ` [page: ${page.problems.slice(0, 2).join(' | ')}]`;
    throw e;
  } finally {
    await page.close();
  }
}

const call = (page, fn, args, timeoutMs = 90_000) => page.eval(`window.bench.${fn}(${JSON.stringify(args)})`, { timeoutMs });

/// Runs the variants of one case `runs` times, interleaved; returns per-variant samples.
async function measure(variants, runs) {
  const out = variants.map(() => ({ values: [], errors: [], extra: [] }));
  for (let r = 0; r < runs; r++) {
    for (const [i, v] of variants.entries()) {
      if (v.na) continue;
      try {
        const res = await v.run(r);
        out[i].values.push(res.value);
        out[i].extra.push(res);
      } catch (e) {
        out[i].errors.push(e.message.split('\n')[0]);
        log(`${v.label} run ${r + 1}: ${e.message.split('\n')[0]}`);
      }
    }
  }
  return out.map((o, i) => {
    if (variants[i].na) return { na: variants[i].na };
    if (!o.values.length) return { na: o.errors[0] ?? 'no result' };
    return { value: median(o.values), values: o.values, extra: o.extra, failed: o.errors.length, firstError: o.errors[0] };
  });
}

async function main() {
  const started = Date.now();
  const site = await buildSite();
  const haveHf = existsSync(join(site, 'pkg/dist/index.js'));
  const hfNa = haveHf ? undefined : 'package did not build';

  log('starting servers');
  const [one, many] = await Promise.all([startServer(site, ['--ws-batch-max', '1']), startServer(site)]);
  const peers = await startPeerServers();
  let proxy = null;
  let proxyNa = PROXY_BIN ? undefined : 'fault proxy not built';
  if (PROXY_BIN) {
    try {
      const port = new URL(many).port;
      proxy = await spawnUntil(PROXY_BIN, ['--listen', '127.0.0.1:0', '--upstream', `127.0.0.1:${port}`], /listening on (http:\/\/\S+)/, 'fault proxy');
    } catch (e) {
      proxyNa = e.message;
    }
  }
  const fault = async (cfg) => {
    const res = await fetch(`${proxy}/__fault/config`, { method: 'POST', body: JSON.stringify(cfg) });
    if (!res.ok) throw new Error(`fault config ${JSON.stringify(cfg)}: HTTP ${res.status} ${await res.text()}`);
  };

  const want = (id) => !ONLY || ONLY.includes(id);
  log('publishing events');
  const t0 = Date.now();
  if (want('ws1')) await publish(one, 'frame1', SIZE.frame1);
  if (want('batch')) await publish(many, 'batch', SIZE.batch);
  if (want('sse') || want('poll')) await publish(many, 'stream', SIZE.stream);
  log(`published in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  const browser = await launchChromium();
  cleanups.push(() => browser.close());
  log(`browser: ${browser.version}`);

  const rows = [];
  const row = (r) => {
    rows.push(r);
    console.error(`[bench] ${r.case}: ${cell(r.hf, r.fmt)} vs ${r.baseLabel ?? '—'} ${r.base ? cell(r.base, r.fmt) : ''}`);
  };
  const on = (origin, fn, args, t) => () => withPage(browser, origin, (p) => call(p, fn, args, t));
  const rate = (f) => async () => {
    const r = await f();
    return { ...r, value: r.perSec };
  };
  // Holdfast catch-up: live client, primer event, network cut, n events published, network
  // back: the client resumes from its cursor and catches up (see installGate in bench.js).
  // When the client honours `since`, it reads the same history from the start as the
  // baselines do (same topic, same frames); otherwise the cut-and-resume below.
  let sinceOk = false;
  if (haveHf) {
    sinceOk = await withPage(browser, many, (p) => call(p, 'hfSince', { topic: 'probe', n: 1, probe: true }))
      .then((r) => r.since)
      .catch(() => false);
    log(`Holdfast catch-ups: ${sinceOk ? "from history with since: '0'" : 'cut and resume (the since option is not applied)'}`);
  }
  methodNote = sinceOk
    ? "Holdfast catch-ups read the same history as the baselines (`since: '0'`)."
    : 'Holdfast catch-ups: live client cut off, events published, resumed from its cursor (`since` not applied by this build).';
  const hfCatchUp = (server, topic, n, transports, extra = {}) => () =>
    sinceOk
      ? withPage(browser, server, async (p) => {
          const base = { 'ws1-hf': 'frame1', 'batch-hf': 'batch', 'sse-hf': 'stream', 'poll-hf': 'stream' }[topic.replace(/b$/, '')];
          const id = topic.replace(/-hf$/, '');
          const profiling = PROFILE?.includes(id);
          if (profiling) {
            await p.send('Profiler.enable');
            await p.send('Profiler.setSamplingInterval', { interval: 100 });
            await p.send('Profiler.start');
          }
          const res = await call(p, 'hfSince', { topic: base, n, transports, pkg: extra.pkg });
          if (profiling) printProfile(id, (await p.send('Profiler.stop')).profile);
          return { ...res, value: res.perSec };
        })
      : cutAndResume(server, topic, n, transports, extra);
  const cutAndResume = (server, topic, n, transports, extra = {}) =>
    withPage(browser, server, async (p) => {
      await call(p, 'hfOpen', { topic, transports, ...extra });
      await publish(server, topic, 1, 0);
      await call(p, 'hfArm', {});
      await publish(server, topic, n, 1);
      await call(p, 'hfResume', { n });
      const id = topic.replace(/-hf$/, '');
      const profiling = PROFILE?.includes(id);
      if (profiling) {
        await p.send('Profiler.enable');
        await p.send('Profiler.setSamplingInterval', { interval: 100 });
        await p.send('Profiler.start');
      }
      const res = await call(p, 'hfRun', { n });
      if (profiling) printProfile(id, (await p.send('Profiler.stop')).profile);
      return { ...res, value: res.perSec };
    });

  // 1. WebSocket, one event per frame.
  if (want('ws1')) {
    const [hf, ...others] = await measure([
      { label: 'holdfast ws1', na: hfNa, run: hfCatchUp(one, 'ws1-hf', SIZE.frame1, ['websocket']) },
      ...(COMPARE ? [{ label: 'holdfast ws1 (--compare)', run: hfCatchUp(one, 'ws1-hfb', SIZE.frame1, ['websocket'], { pkg: 'pkg-b' }) }] : []),
      { label: 'native ws1', run: rate(on(one, 'wsNative', { topic: 'frame1', n: SIZE.frame1 })) },
    ], RUNS);
    const hfB = COMPARE ? others.shift() : null;
    const [nat] = others;
    row({ case: 'WebSocket, 1 event per frame', hf, base: nat, baseLabel: 'native WebSocket + JSON.parse', fmt: fmtRate, higher: true, goal: '≥ 0.95', check: (x) => x >= 0.95 });
    if (hfB) row({ case: 'WebSocket, 1 event per frame', hf: hfB, hfLabel: '--compare build', base: nat, baseLabel: 'native WebSocket + JSON.parse', fmt: fmtRate, higher: true, goal: '≥ 0.95', check: (x) => x >= 0.95 });
  }

  // 2. WebSocket, server batching: catch-up of 100,000 events.
  if (want('batch')) {
    const [hf, ...others] = await measure([
      { label: 'holdfast batch', na: hfNa, run: hfCatchUp(many, 'batch-hf', SIZE.batch, ['websocket']) },
      ...(COMPARE ? [{ label: 'holdfast batch (--compare)', run: hfCatchUp(many, 'batch-hfb', SIZE.batch, ['websocket'], { pkg: 'pkg-b' }) }] : []),
      { label: 'native batch', run: rate(on(many, 'wsNative', { topic: 'batch', n: SIZE.batch })) },
    ], RUNS);
    const hfB = COMPARE ? others.shift() : null;
    const [nat] = others;
    row({ case: `WebSocket, catch-up of ${SIZE.batch.toLocaleString('en-US')} (server batches)`, hf, base: nat, baseLabel: 'native WebSocket, same batches', fmt: fmtRate, higher: true });
    if (hfB) row({ case: `WebSocket, catch-up of ${SIZE.batch.toLocaleString('en-US')} (server batches)`, hf: hfB, hfLabel: '--compare build', base: nat, baseLabel: 'native WebSocket, same batches', fmt: fmtRate, higher: true });
  }

  // 3. SSE.
  if (want('sse')) {
    const [hf, ...others] = await measure([
      { label: 'holdfast sse', na: hfNa, run: hfCatchUp(many, 'sse-hf', SIZE.stream, ['sse']) },
      ...(COMPARE ? [{ label: 'holdfast sse (--compare)', run: hfCatchUp(many, 'sse-hfb', SIZE.stream, ['sse'], { pkg: 'pkg-b' }) }] : []),
      { label: 'fetch-stream sse', run: rate(on(many, 'sseFetch', { topic: 'stream', n: SIZE.stream })) },
      { label: 'EventSource', run: rate(on(many, 'sseNative', { topic: 'stream', n: SIZE.stream })) },
    ], RUNS);
    const hfB = COMPARE ? others.shift() : null;
    const [fetchSse, es] = others;
    row({ case: 'SSE', hf, base: fetchSse, baseLabel: 'fetch stream parsed in plain JS', fmt: fmtRate, higher: true, goal: '≥ 0.9', check: (x) => x >= 0.9 });
    if (hfB) row({ case: 'SSE', hf: hfB, hfLabel: '--compare build', base: fetchSse, baseLabel: 'fetch stream parsed in plain JS', fmt: fmtRate, higher: true, goal: '≥ 0.9', check: (x) => x >= 0.9 });
    row({ case: 'SSE', hf, base: es, baseLabel: 'native EventSource', fmt: fmtRate, higher: true });
    if (hfB) row({ case: 'SSE', hf: hfB, hfLabel: '--compare build', base: es, baseLabel: 'native EventSource', fmt: fmtRate, higher: true });
  }

  // 4. Polling.
  if (want('poll')) {
    const [hf, ...others] = await measure([
      { label: 'holdfast poll', na: hfNa, run: hfCatchUp(many, 'poll-hf', SIZE.stream, ['polling']) },
      ...(COMPARE ? [{ label: 'holdfast poll (--compare)', run: hfCatchUp(many, 'poll-hfb', SIZE.stream, ['polling'], { pkg: 'pkg-b' }) }] : []),
      { label: 'fetch poll', run: rate(on(many, 'pollFetch', { topic: 'stream', n: SIZE.stream })) },
    ], RUNS);
    const hfB = COMPARE ? others.shift() : null;
    const [nat] = others;
    row({ case: 'polling (1,000 per batch)', hf, base: nat, baseLabel: 'plain fetch loop, same batches', fmt: fmtRate, higher: true, goal: '≥ 0.9', check: (x) => x >= 0.9 });
    if (hfB) row({ case: 'polling (1,000 per batch)', hf: hfB, hfLabel: '--compare build', base: nat, baseLabel: 'plain fetch loop, same batches', fmt: fmtRate, higher: true, goal: '≥ 0.9', check: (x) => x >= 0.9 });
  }

  // 5. Round trip.
  if (want('rtt')) {
    const isolated = await startIsolatedSite(site);
    const rtt = (fn, extra) => (r) =>
      withPage(browser, isolated, async (p) => {
        const res = await call(p, fn, { topic: `rtt-${fn}-${extra?.kind ?? ''}-${r}`, count: SIZE.rtt, server: many, ...extra });
        if (!res.isolated) throw new Error('the round-trip page is not cross-origin isolated (coarse timers)');
        return { ...res, value: res.median };
      });
    const [hf, ...others] = await measure([
      { label: 'holdfast send→ack', na: hfNa, run: rtt('hfRtt') },
      ...(COMPARE ? [{ label: 'holdfast send→ack (--compare)', run: rtt('hfRtt', { pkg: 'pkg-b' }) }] : []),
      { label: 'native ping→pong', run: rtt('wsRtt', { kind: 'ping' }) },
      { label: 'native send→ack', run: rtt('wsRtt', { kind: 'send' }) },
    ], RUNS);
    const hfB = COMPARE ? others.shift() : null;
    const [ping, sendAck] = others;
    const p99 = (s) => (s.na ? s : { ...s, value: median(s.extra.map((e) => e.p99)) });
    row({ case: 'send → ack round trip, median', hf, base: ping, baseLabel: 'native WebSocket ping/pong', fmt: fmtMs, higher: false, goal: '≤ +0.1 ms', checkDiff: (d) => d <= 0.1 });
    row({ case: 'send → ack round trip, p99', hf: p99(hf), base: p99(ping), baseLabel: 'native WebSocket ping/pong', fmt: fmtMs, higher: false });
    if (hfB) row({ case: 'send → ack round trip, median', hf: hfB, hfLabel: '--compare build', base: ping, baseLabel: 'native WebSocket ping/pong', fmt: fmtMs, higher: false, goal: '≤ +0.1 ms', checkDiff: (d) => d <= 0.1 });
    row({ case: 'send → ack round trip, median', hf, base: sendAck, baseLabel: 'native WebSocket send/ack frames', fmt: fmtMs, higher: false });
  }

  // 6. Time to first event through the fault proxy.
  if (want('first')) {
    let trickling = true;
    const trickle = (async () => {
      for (let seq = 1; trickling; seq++) {
        await publish(many, 'first', 1, seq).catch(() => {});
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    cleanups.push(() => (trickling = false));
    for (const [label, cfg, goal, limit] of [
      ['no fault (through the proxy)', {}, undefined, undefined],
      ['upgrade refused (400)', { refuseUpgrade: 400 }, '≤ 300 ms', 300],
      ['upgrade hangs (101, then silence)', { silenceAfterUpgrade: true }, '≤ 3,000 ms', 3000],
    ]) {
      const [hf] = await measure([
        {
          label: `first event, ${label}`,
          na: hfNa ?? proxyNa,
          run: async () => {
            await fault(cfg);
            try {
              const r = await withPage(browser, proxy, (p) => call(p, 'hfFirstEvent', { topic: 'first' }));
              return { ...r, value: r.ms };
            } finally {
              await fault({});
            }
          },
        },
      ], Math.min(RUNS, 3));
      row({ case: `time to first event, ${label}`, hf, fmt: fmtMs, higher: false, goal, checkAbs: limit && ((x) => x <= limit), note: hf.extra && `rung: ${[...new Set(hf.extra.map((e) => e.transport))].join(', ')}` });
    }
    trickling = false;
    await trickle;
  }

  // 7. Online → caught up after being offline with events missed.
  if (want('offline')) {
    const [hf] = await measure([
      {
        label: 'offline catch-up',
        na: hfNa,
        run: (r) =>
          withPage(browser, many, async (p) => {
            const topic = `offline-${r}-${Date.now()}`;
            await call(p, 'hfLiveStart', { topic });
            await publish(many, topic, 1, 0); // one live event proves the connection flows
            await p.send('Network.enable');
            await p.send('Network.emulateNetworkConditions', { offline: true, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
            const offAt = Date.now();
            await publish(many, topic, SIZE.offline, 1);
            await new Promise((res) => setTimeout(res, Math.max(0, SIZE.offlineSecs * 1000 - (Date.now() - offAt))));
            await p.eval('(window.__live.markAt = performance.now(), window.__live.countAtMark = window.__live.count, true)');
            await p.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
            await p.send('Network.disable');
            const res = await call(p, 'hfLiveCaughtUp', { n: SIZE.offline + 1 });
            return { ...res, value: res.ms };
          }),
      },
    ], Math.min(RUNS, 3));
    row({
      case: `online → caught up (${SIZE.offlineSecs} s offline, ${SIZE.offline.toLocaleString('en-US')} missed)`, hf, fmt: fmtMs, higher: false,
      note: hf.extra && `rung: ${[...new Set(hf.extra.map((e) => e.transport))].join(', ')}; events received while offline: ${Math.max(...hf.extra.map((e) => e.duringOffline))}; \`online\` event ${hf.extra.every((e) => e.onlineEvent) ? 'fired' : 'missing in some runs (timed from the switch)'}`,
    });
  }

  // 8. Memory after a million events, after GC, connection still open. Both sides receive
  // the events live (published while they are connected), in the same frames.
  if (want('memory')) {
    const memRun = (kind) => (r) =>
      withPage(browser, many, async (p) => {
        const topic = `mem-${kind}-${r}`;
        const usage = async () => {
          await p.send('HeapProfiler.enable');
          for (let i = 0; i < 3; i++) await p.send('HeapProfiler.collectGarbage');
          const { usedSize } = await p.send('Runtime.getHeapUsage');
          return usedSize + (await p.eval('window.bench.wasmBytes()'));
        };
        if (kind === 'hf') await call(p, 'hfOpen', { topic, transports: ['websocket'], gate: false });
        else await call(p, 'nativeOpen', { topic });
        const before = await usage();
        await Promise.all([
          call(p, kind === 'hf' ? 'hfRun' : 'nativeRun', { n: SIZE.mem, keepOpen: true, timeoutMs: 120_000 }, 150_000),
          publish(many, topic, SIZE.mem, 1),
        ]);
        await p.send('HeapProfiler.enable');
        for (let i = 0; i < 3; i++) await p.send('HeapProfiler.collectGarbage');
        const { usedSize } = await p.send('Runtime.getHeapUsage');
        const wasm = await p.eval('window.bench.wasmBytes()');
        return { value: usedSize + wasm, heap: usedSize, wasm, growth: usedSize + wasm - before };
      });
    const [hf, nat] = await measure([
      { label: 'holdfast memory', na: hfNa, run: memRun('hf') },
      { label: 'native memory', run: memRun('native') },
    ], Math.min(RUNS, 3));
    row({
      case: `JS heap + wasm memory after ${SIZE.mem.toLocaleString('en-US')} events, after GC`, hf, base: nat, baseLabel: 'native WebSocket (JS heap)', fmt: fmtMB, higher: false,
      goal: '≤ +1 MB', checkDiff: (d) => d <= 1048576,
      note: hf.extra && `heap ${fmtMB(median(hf.extra.map((e) => e.heap)))} + wasm ${fmtMB(median(hf.extra.map((e) => e.wasm)))}; grew ${fmtMB(median(hf.extra.map((e) => e.growth)))} during the events, native ${nat.extra ? fmtMB(median(nat.extra.map((e) => e.growth))) : 'n/a'}`,
    });
  }

  // 9. socket.io-client over WebSocket vs native, one event per frame, node servers.
  if (want('sio')) {
    const [sio, nat] = await measure([
      { label: 'socket.io-client', run: rate(on(many, 'sioStream', { url: peers.sio, n: SIZE.sio })) },
      { label: 'native (node ws)', run: rate(on(many, 'wsNodeStream', { url: peers.native, n: SIZE.sio })) },
    ], RUNS);
    row({ case: 'socket.io-client over WebSocket, 1 event per frame (peer)', hf: sio, hfLabel: 'socket.io-client', base: nat, baseLabel: 'native WebSocket, same node server', fmt: fmtRate, higher: true });
  }

  const sizeRows = want('size') ? await sizes() : [];
  const elapsed = (Date.now() - started) / 1000;
  const report = render(rows, sizeRows, { browser: browser.version, elapsed });
  console.log(report);
  if (OUT) writeFileSync(OUT, report);
  if (DOC) {
    // Replace the table between the markers of BENCHMARKS.md, leaving the notes around it.
    const text = readFileSync(DOC, 'utf8');
    const begin = '<!-- bench:begin -->';
    const end = '<!-- bench:end -->';
    const a = text.indexOf(begin);
    const b = text.indexOf(end);
    if (a === -1 || b < a) throw new Error(`${DOC} has no ${begin} … ${end} markers`);
    writeFileSync(DOC, `${text.slice(0, a + begin.length)}\n${report}\n${text.slice(b)}`);
    log(`table written into ${DOC}`);
  }
}

// ---------------------------------------------------------------- report

/// Prints the functions with the most self time in a CPU profile (`--profile CASE`).
function printProfile(id, profile) {
  const byNode = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  for (let i = 0; i < profile.samples.length; i++) {
    const n = byNode.get(profile.samples[i]);
    const f = n.callFrame;
    const key = `${f.functionName || '(anonymous)'} ${f.url ? `${f.url.split('/').pop()}:${f.lineNumber + 1}` : ''}`.trim();
    self.set(key, (self.get(key) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const top = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15);
  console.error(`[bench] CPU profile of the Holdfast ${id} run (self time):`);
  for (const [k, us] of top) console.error(`  ${((100 * us) / total).toFixed(1).padStart(5)} %  ${k}`);
}

function cell(s, fmt) {
  if (!s) return '—';
  if (s.na) return `n/a (${s.na})`;
  return `${fmt(s.value)}${s.failed ? ` (${s.failed} run(s) failed: ${s.firstError})` : ''}`;
}

function render(rows, sizeRows, { browser, elapsed }) {
  const lines = [];
  lines.push(`Machine: ${cpus().length} cores, ${cpus()[0]?.model ?? 'unknown CPU'}; ${browser}; node ${process.version}; ${RUNS} runs per case (medians), ${elapsed.toFixed(0)} s in all.`);
  if (methodNote) lines.push('', methodNote);
  lines.push('');
  lines.push('| case | Holdfast | baseline | baseline value | ratio | goal | met |');
  lines.push('|---|---:|---|---:|---:|---|---|');
  for (const r of rows) {
    let ratio = '—';
    let met = '—';
    if (r.base && !r.base.na && r.hf && !r.hf.na) {
      const x = r.hf.value / r.base.value;
      ratio = r.higher ? `${x.toFixed(2)}` : `${x.toFixed(2)}× (${r.hf.value - r.base.value >= 0 ? '+' : ''}${r.fmt(r.hf.value - r.base.value)})`;
      if (r.check) met = r.check(x) ? 'yes' : 'no';
      if (r.checkDiff) met = r.checkDiff(r.hf.value - r.base.value) ? 'yes' : 'no';
    }
    if (r.checkAbs && r.hf && !r.hf.na) met = r.checkAbs(r.hf.value) ? 'yes' : 'no';
    if (r.goal && r.hf?.na) met = 'no (n/a)';
    const hfCell = `${r.hfLabel ? `${r.hfLabel}: ` : ''}${cell(r.hf, r.fmt)}${r.note ? ` (${r.note})` : ''}`;
    lines.push(`| ${r.case} | ${hfCell} | ${r.baseLabel ?? '—'} | ${r.base ? cell(r.base, r.fmt) : '—'} | ${ratio} | ${r.goal ?? '—'} | ${met} |`);
  }
  if (sizeRows.length) {
    lines.push('');
    lines.push('What a browser downloads (esbuild --bundle --minify --format=esm; each file compressed on its own):');
    lines.push('');
    lines.push('| client | raw | gzip | brotli | note |');
    lines.push('|---|---:|---:|---:|---|');
    for (const s of sizeRows) {
      if (s.na) lines.push(`| ${s.name} | n/a (${s.na}) | | | |`);
      else lines.push(`| ${s.name} | ${fmtKB(s.raw)} | ${fmtKB(s.gzip)} | ${fmtKB(s.brotli)} | ${s.note ?? ''} |`);
    }
    const hf = sizeRows[0];
    if (!hf.na) {
      const others = sizeRows.slice(1).filter((s) => !s.na && !s.own);
      const smaller = others.filter((s) => hf.gzip < s.gzip).map((s) => s.name);
      lines.push('');
      lines.push(`Size goal (≤ 13.5 KB gzip and smaller than socket.io-client and SignalR): ${hf.gzip <= 13_500 && smaller.includes('socket.io-client') && smaller.includes('@microsoft/signalr') ? 'met' : 'not met'} (Holdfast ${fmtKB(hf.gzip)} gzip; smaller than: ${smaller.join(', ') || 'none'}).`);
    }
  }
  return lines.join('\n');
}

let code = 0;
try {
  await main();
} catch (e) {
  console.error(`bench failed: ${e.stack ?? e.message}`);
  code = 1;
} finally {
  for (const c of cleanups.reverse()) {
    try {
      await c();
    } catch {}
  }
}
process.exit(code);
