// The demo page (examples/admin/index.html) as `cargo xtask demo` serves it: the reference
// server with its demo generator behind the fault proxy, the page's Network panel switching
// the proxy's faults. Checks that a visitor sees what Holdfast is for: a fault switched on
// moves the client down the ladder with the reason on screen, clearing it moves the client
// back up, duplicates and missing stay 0, and changing rungs keeps the client log.
// Screenshots of each step go to tests/e2e/.artifacts/ (look at them when this fails).
// Needs HOLDFAST_SERVER_BIN, HOLDFAST_FAULT_PROXY_BIN and HOLDFAST_PACKAGE_DIR (as tests/e2e;
// `cargo xtask test`). Run: node --test js/e2e/demo.test.mjs (with the variables set)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchBrowser, makeSite, startServer, waitInPage } from '../../tests/e2e/harness.mjs';
import { startProxy } from '../../tests/e2e/faults.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const artifacts = join(root, 'tests/e2e/.artifacts');
let site, server, proxy, browser;

before(async () => {
  site = makeSite({ 'index.html': readFileSync(join(root, 'examples/admin/index.html'), 'utf8') });
  server = await startServer(['--demo', '--demo-interval-ms', '100', '--static', site.dir]);
  proxy = await startProxy(server.url);
  browser = await launchBrowser();
  mkdirSync(artifacts, { recursive: true });
});

after(async () => {
  await browser?.close();
  await proxy?.stop();
  await server?.stop();
  site?.remove();
});

const text = (page, id) => page.evaluate((i) => document.getElementById(i).textContent, id);

/// Waits until the header says `open via <transport>`.
const waitOn = (page, transport, timeoutMs = 40_000) =>
  waitInPage(
    page,
    (t) => document.getElementById('status').textContent === 'open' && document.getElementById('transport').textContent === t,
    transport,
    { timeoutMs, what: `the demo page to show "open via ${transport}"` },
  );

/// Waits until the ladder row of `rung` matches `pattern` (the ladder is redrawn twice a second).
const waitRung = (page, rung, pattern, timeoutMs = 20_000) =>
  waitInPage(
    page,
    ([r, p]) => new RegExp(p).test([...document.querySelectorAll('#ladder .rung')].find((row) => row.firstChild.textContent === r)?.lastChild.textContent ?? ''),
    [rung, pattern],
    { timeoutMs, what: `the ladder to show ${rung}: /${pattern}/` },
  );

async function assertNoLossNoRepeat(page, step) {
  assert.equal(await text(page, 'c-dup'), '0', `${step}: duplicates`);
  assert.equal(await text(page, 'c-missing'), '0', `${step}: missing`);
}

test('the demo page: faults from the network panel move the client down the ladder and back, with nothing lost or repeated', async () => {
  const page = await browser.newPage({ viewport: { width: 1500, height: 1000 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const shot = (name) => page.screenshot({ path: join(artifacts, `demo-${name}.png`), fullPage: true });
  await page.goto(`${proxy.url}/`);

  await waitOn(page, 'websocket');
  await waitInPage(page, () => Number(document.getElementById('c-delivered').textContent) >= 5, undefined, {
    what: 'five events delivered',
  });
  assert.notEqual(await text(page, 'deployment'), 'waiting for the first event…');
  await waitRung(page, 'websocket', 'in use');
  await shot('1-live');

  // WebSocket refused, as IIS without its WebSocket module: the open socket is cut, the
  // upgrade is refused, the client goes on over SSE and says why.
  await page.check('[data-fault=refuse]');
  await page.click('#cutnow');
  await waitOn(page, 'sse');
  await waitInPage(page, () => document.getElementById('why').textContent.includes('upgrade_refused'), undefined, {
    what: 'the reason on screen',
  });
  await waitRung(page, 'websocket', 'upgrade_refused');
  await assertNoLossNoRepeat(page, 'websocket refused');
  await shot('2-websocket-refused');

  // SSE held by a buffering proxy too: the client proves it blocked and steps down to polling.
  await page.check('[data-fault=buffer]');
  await page.click('#cutnow');
  await waitOn(page, 'polling');
  await waitRung(page, 'sse', 'sse_buffered');
  await assertNoLossNoRepeat(page, 'sse buffered');
  await shot('3-sse-buffered');

  // Faults cleared: a probe moves the client back up to the WebSocket.
  await page.click('#clear');
  await waitOn(page, 'websocket', 60_000);
  const before = Number(await text(page, 'c-delivered'));
  await waitInPage(page, (n) => Number(document.getElementById('c-delivered').textContent) > n + 3, before, {
    what: 'events flowing again',
  });
  await assertNoLossNoRepeat(page, 'cleared');
  assert.ok(Number(await text(page, 'c-reconnects')) >= 1, 'the reconnects are counted');
  await shot('4-cleared');

  // Another rung choice is a new client in the same page: the client log stays, the new
  // client resumes where the old one stopped.
  await page.selectOption('#rungs', 'sse');
  await waitOn(page, 'sse');
  const log = await text(page, 'events');
  assert.match(log, /network: on — WebSocket refused/, 'the client log survives a rung change');
  const after = Number(await text(page, 'c-delivered'));
  await waitInPage(page, (n) => Number(document.getElementById('c-delivered').textContent) > n + 3, after, {
    what: 'events over sse only',
  });
  await assertNoLossNoRepeat(page, 'rung change');
  await shot('5-sse-only');

  assert.deepEqual(errors, [], 'no uncaught error in the page');
  await page.close();
});
