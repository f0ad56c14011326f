// The first live path: the built package in Chromium, over WebSocket, from the real server.
// 1,000 published events must arrive in order, each exactly once.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { auditSequence, launchBrowser, makeSite, openPage, publish, startServer, waitInPage } from './harness.mjs';

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>first live path</title>
<script type="module">
  import { createClient } from '/pkg/dist/index.js';
  const topic = new URLSearchParams(location.search).get('topic');
  window.received = [];
  window.client = createClient({ url: '/realtime', params: { topic } });
  window.client.on('message', (m) => window.received.push({ id: m.id, type: m.type, seq: m.data.seq }));
</script>`;

let site, server, browser;

before(async () => {
  site = makeSite({ 'live.html': PAGE });
  server = await startServer(['--static', site.dir]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  site?.remove();
});

test('a thousand published events arrive over WebSocket in order, each exactly once', async () => {
  const topic = 'first-live-path';
  const { page, problems } = await openPage(browser, `${server.url}/live.html?topic=${topic}`);
  await waitInPage(page, () => window.client?.snapshot().status === 'open', null, { what: 'the client to open' });
  assert.equal(await page.evaluate(() => window.client.snapshot().transport), 'websocket');

  const count = 1000;
  for (let start = 1; start <= count; start += 100) {
    const batch = [];
    for (let seq = start; seq < start + 100; seq++) batch.push({ type: 'tick', data: { seq } });
    await publish(server.url, topic, batch);
  }
  await waitInPage(page, (n) => window.received.length >= n, count, { what: `${count} events` });
  // Give stragglers (duplicates) a moment to show up before auditing.
  await page.waitForTimeout(200);

  const received = await page.evaluate(() => window.received);
  const audit = auditSequence(received.map((r) => r.seq), count);
  console.log(`# first live path: sent ${count}, ${JSON.stringify(audit)}, final rung websocket`);
  assert.deepEqual(audit, { received: count, duplicates: 0, outOfOrder: 0, missing: 0 });
  assert.ok(received.every((r) => r.type === 'tick' && typeof r.id === 'string'), 'every event has its type and id');
  assert.equal(await page.evaluate(() => window.client.snapshot().cursor), received.at(-1).id, 'cursor is the last id');

  await page.evaluate(() => window.client.close());
  assert.equal(await page.evaluate(() => window.client.snapshot().status), 'closed');
  assert.deepEqual(problems, [], 'no page errors');
});
