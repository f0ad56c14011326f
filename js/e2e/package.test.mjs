// The built package in the ways people load it: the script-tag build, a Vite build, React
// hooks under StrictMode (bundled by esbuild), server rendering in Node, and
// `Holdfast.diagnose`.
// Needs HOLDFAST_SERVER_BIN and HOLDFAST_PACKAGE_DIR (as tests/e2e; `cargo xtask test`).
// Run: node --test js/e2e/ (with the two variables set)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { launchBrowser, makeSite, openPage, publish, startServer, waitInPage } from '../../tests/e2e/harness.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const ICON = '<link rel="icon" href="data:,">';

const SCRIPT_PAGE = `<!doctype html><meta charset="utf-8">${ICON}<title>script tag</title>
<script src="/pkg/dist/holdfast.js"></script>
<script>
  const topic = new URLSearchParams(location.search).get('topic');
  window.received = [];
  window.client = Holdfast.createClient({ url: '/realtime', params: { topic } });
  window.client.on('message', (m) => window.received.push(m.data.seq));
</script>`;

const REACT_APP = `
import { StrictMode, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { useHoldfast, useHoldfastEvent } from 'holdfast/react';

export function App({ topic }) {
  const hf = useHoldfast({ url: '/realtime', params: { topic } });
  const [ticks, setTicks] = useState(0);
  useHoldfastEvent(hf, 'tick', () => setTicks((n) => n + 1));
  return <p id="out">{hf.status}|{String(hf.transport)}|{hf.lastMessage ? hf.lastMessage.data.seq : '-'}|{ticks}</p>;
}

if (typeof document !== 'undefined' && document.getElementById('root')) {
  const topic = new URLSearchParams(location.search).get('topic');
  createRoot(document.getElementById('root')).render(<StrictMode><App topic={topic} /></StrictMode>);
}
`;

let site, server, browser, work;

/** A scratch project whose node_modules holds the built package and the root's React. */
function scratchProject() {
  const dir = mkdtempSync(join(tmpdir(), 'holdfast-pkg-'));
  mkdirSync(join(dir, 'node_modules'));
  cpSync(process.env.HOLDFAST_PACKAGE_DIR, join(dir, 'node_modules/holdfast'), { recursive: true });
  for (const dep of ['react', 'react-dom', 'scheduler', '@types'])
    symlinkSync(join(root, 'node_modules', dep), join(dir, 'node_modules', dep));
  writeFileSync(join(dir, 'app.jsx'), REACT_APP);
  return dir;
}

before(async () => {
  work = scratchProject();
  // esbuild leaves `new URL('./holdfast_wasm_bg.wasm', import.meta.url)` alone: the wasm is
  // copied beside the bundle, as the README tells esbuild users.
  const out = join(work, 'out');
  await build({
    entryPoints: [join(work, 'app.jsx')],
    bundle: true,
    format: 'esm',
    outfile: join(out, 'app.js'),
    jsx: 'automatic',
    define: { 'process.env.NODE_ENV': '"production"' },
    logLevel: 'error',
  });
  cpSync(join(work, 'node_modules/holdfast/dist/holdfast_wasm_bg.wasm'), join(out, 'holdfast_wasm_bg.wasm'));
  // Vite: an index.html and an entry importing the package; nothing configured.
  writeFileSync(
    join(work, 'index.html'),
    `<!doctype html><meta charset="utf-8">${ICON}<p id="out">-</p><script type="module" src="./main.js"></script>`,
  );
  writeFileSync(
    join(work, 'main.js'),
    `import { createClient } from 'holdfast';
     const topic = new URLSearchParams(location.search).get('topic');
     const client = createClient({ url: '/realtime', params: { topic } });
     window.received = [];
     client.on('message', (m) => window.received.push(m.data.seq));
     client.subscribe(() => { document.getElementById('out').textContent = client.snapshot().status; });`,
  );
  const { build: viteBuild } = await import('vite');
  await viteBuild({ root: work, base: '/vite/', logLevel: 'error', build: { outDir: join(work, 'vite-out') } });
  site = makeSite({
    'script.html': SCRIPT_PAGE,
    'react.html': `<!doctype html><meta charset="utf-8">${ICON}<div id="root"></div><script type="module" src="/react/app.js"></script>`,
  });
  cpSync(out, join(site.dir, 'react'), { recursive: true });
  cpSync(join(work, 'vite-out'), join(site.dir, 'vite'), { recursive: true });
  server = await startServer(['--static', site.dir]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  site?.remove();
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the script-tag build defines window.Holdfast and receives events in order', async () => {
  const topic = 'script-tag';
  const { page, problems } = await openPage(browser, `${server.url}/script.html?topic=${topic}`);
  await waitInPage(page, () => window.client.snapshot().status === 'open', null, { what: 'open' });
  await publish(server.url, topic, Array.from({ length: 20 }, (_, i) => ({ type: 'tick', data: { seq: i + 1 } })));
  await waitInPage(page, () => window.received.length >= 20, null, { what: '20 events' });
  assert.deepEqual(await page.evaluate(() => window.received), Array.from({ length: 20 }, (_, i) => i + 1));
  assert.deepEqual(
    await page.evaluate(() => Object.keys(window.Holdfast).sort()),
    ['HoldfastError', 'createClient', 'diagnose', 'initialSnapshot'],
  );
  await page.evaluate(() => window.client.close());
  assert.deepEqual(problems, []);
  await page.close();
});

test('a Vite build of an app importing holdfast emits the wasm and receives events', async () => {
  const topic = 'vite';
  const { page, problems } = await openPage(browser, `${server.url}/vite/index.html?topic=${topic}`);
  await waitInPage(page, () => document.getElementById('out').textContent === 'open', null, { what: 'open' });
  await publish(server.url, topic, [1, 2, 3].map((seq) => ({ type: 'tick', data: { seq } })));
  await waitInPage(page, () => window.received.length >= 3, null, { what: '3 events' });
  assert.deepEqual(await page.evaluate(() => window.received), [1, 2, 3]);
  assert.deepEqual(problems, []);
  await page.close();
});

test('Holdfast.diagnose(url) tries every rung and reports which work', async () => {
  const { page, problems } = await openPage(browser, `${server.url}/script.html?topic=diag`);
  const logs = [];
  page.on('console', (m) => m.type() === 'log' && logs.push(m.text()));
  const results = await page.evaluate(() => Holdfast.diagnose('/realtime', { timeoutMs: 10000 }));
  assert.deepEqual(results.map((r) => [r.transport, r.ok]), [['websocket', true], ['sse', true], ['polling', true]]);
  assert.match(logs.join('\n'), /✔ websocket: works/);
  assert.deepEqual(problems, []);
  // A wrong URL: every rung fails with a code and a message (the browser logs the 404s).
  const bad = await page.evaluate(() => Holdfast.diagnose('/nowhere', { timeoutMs: 10000, quiet: true }));
  assert.ok(bad.every((r) => !r.ok && r.code && r.message), JSON.stringify(bad));
  await page.evaluate(() => window.client.close());
  assert.deepEqual(problems.filter((p) => p.startsWith('pageerror')), []);
  await page.close();
});

test('useHoldfast under StrictMode keeps one live connection and renders live events', async () => {
  const topic = 'react-strict';
  const { page, problems } = await openPage(browser, `${server.url}/react.html?topic=${topic}`);
  await waitInPage(page, () => document.getElementById('out')?.textContent.startsWith('open|websocket'), null, {
    what: 'the hook to open',
  });
  await publish(server.url, topic, [1, 2, 3].map((seq) => ({ type: 'tick', data: { seq } })));
  await waitInPage(page, () => document.getElementById('out').textContent === 'open|websocket|3|3', null, {
    what: 'three events rendered',
  });
  // The first mount's client is closed by StrictMode's cleanup; the server may take a
  // moment to see that socket go.
  let subscribers;
  for (let i = 0; i < 100; i++) {
    subscribers = (await (await fetch(`${server.url}/health`)).json()).subscribers;
    if (subscribers === 1) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(subscribers, 1, 'StrictMode double mounting left exactly one connection');
  assert.deepEqual(problems, []);
  await page.close();
});

test('server rendering imports the package and renders the connecting state without browser globals', async () => {
  const ssr = join(work, 'ssr.mjs');
  await build({
    entryPoints: [join(work, 'app.jsx')],
    bundle: true,
    format: 'esm',
    platform: 'node',
    outfile: ssr,
    jsx: 'automatic',
    packages: 'external',
    logLevel: 'error',
  });
  writeFileSync(
    join(work, 'render.mjs'),
    `import { renderToString } from 'react-dom/server';
     import { createElement } from 'react';
     import { App } from './ssr.mjs';
     export const html = renderToString(createElement(App, { topic: 't' }));`,
  );
  assert.equal(typeof globalThis.window, 'undefined');
  const { html } = await import(pathToFileURL(join(work, 'render.mjs')));
  assert.equal(html.replace(/<!-- -->/g, ''), '<p id="out">connecting|null|-|0</p>');
});

test('the package types check in a TypeScript app using holdfast and holdfast/react', () => {
  writeFileSync(
    join(work, 'consumer.tsx'),
    `import { createClient, diagnose, HoldfastError, type Snapshot, type Message } from 'holdfast';
     import { useHoldfast, useHoldfastEvent } from 'holdfast/react';
     const c = createClient({ url: '/realtime', transports: ['sse', 'polling'], params: { topic: 't', n: 1 },
       token: async () => 'x', heartbeat: { intervalMs: 30000 }, backoff: { maxMs: 5000 } });
     const off: () => void = c.on('message', (m: Message) => console.log(m.id, m.type, m.data));
     c.on('error', (e: HoldfastError) => console.log(e.code, e.transport));
     const s: Snapshot = c.snapshot();
     const status: 'connecting' | 'open' | 'reconnecting' | 'offline' | 'closed' = s.status;
     c.send({ a: 1 }).then(() => c.close());
     c.diagnostics().attempts.forEach((a) => a.failure?.code);
     diagnose('/realtime').then((r) => r.map((x) => x.ok));
     export function App() {
       const hf = useHoldfast<{ seq: number }>({ url: '/realtime' });
       useHoldfastEvent<{ percent: number }>(hf, 'progress', (d) => d.percent.toFixed());
       return <p>{hf.status}{hf.lastMessage?.data.seq}{status}{String(off)}</p>;
     }
     // @ts-expect-error: an unknown transport is a type error
     createClient({ url: '/r', transports: ['carrier-pigeon'] });`,
  );
  writeFileSync(
    join(work, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { strict: true, noEmit: true, jsx: 'react-jsx', module: 'esnext', moduleResolution: 'bundler', target: 'es2020', lib: ['es2022', 'dom'], skipLibCheck: false, types: [] },
      files: ['consumer.tsx'],
    }),
  );
  execFileSync(join(root, 'node_modules/.bin/tsc'), ['-p', join(work, 'tsconfig.json')], { stdio: 'inherit' });
});
