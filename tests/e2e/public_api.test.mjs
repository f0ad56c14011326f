// The public API in a real browser against the real server: each rung alone, send/ack on each
// rung, close() stops all traffic, invalid options throw typed errors.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { auditSequence, launchBrowser, makeSite, openPage, publish, startServer, waitInPage } from './harness.mjs';

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>public api</title>
<script type="module">
  import * as holdfast from '/pkg/dist/index.js';
  window.holdfast = holdfast;
  window.ready = true;
</script>`;

const RUNGS = ['websocket', 'sse', 'polling'];
let site, server, browser;

before(async () => {
  site = makeSite({ 'api.html': PAGE });
  server = await startServer(['--static', site.dir]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  site?.remove();
});

async function pageWithClient(topic, options) {
  const { page, problems } = await openPage(browser, `${server.url}/api.html`);
  await waitInPage(page, () => window.ready === true, null, { what: 'the module to load' });
  await page.evaluate(
    ([topic, options]) => {
      window.received = [];
      window.client = window.holdfast.createClient({ url: '/realtime', params: { topic }, ...options });
      window.client.on('message', (m) => window.received.push({ id: m.id, seq: m.data?.seq }));
    },
    [topic, options],
  );
  await waitInPage(page, () => window.client.snapshot().status === 'open', null, { what: 'the client to open' });
  return { page, problems };
}

async function publishNumbered(topic, count) {
  for (let start = 1; start <= count; start += 250) {
    const batch = [];
    for (let seq = start; seq < Math.min(start + 250, count + 1); seq++) batch.push({ type: 'tick', data: { seq } });
    await publish(server.url, topic, batch);
  }
}

for (const rung of RUNGS) {
  test(`the ${rung} rung alone receives 1,000 events in order, each once`, async () => {
    const topic = `alone-${rung}`;
    const { page, problems } = await pageWithClient(topic, { transports: [rung] });
    assert.equal(await page.evaluate(() => window.client.snapshot().transport), rung);
    await publishNumbered(topic, 1000);
    await waitInPage(page, () => window.received.length >= 1000, null, { what: `1,000 events over ${rung}` });
    await page.waitForTimeout(200);
    const audit = auditSequence(await page.evaluate(() => window.received.map((r) => r.seq)), 1000);
    console.log(`# ${rung} alone: sent 1000, ${JSON.stringify(audit)}, final rung ${rung}`);
    assert.deepEqual(audit, { received: 1000, duplicates: 0, outOfOrder: 0, missing: 0 });
    await page.evaluate(() => window.client.close());
    assert.deepEqual(problems, []);
    await page.close();
  });

  test(`send() on the ${rung} rung resolves when the server acknowledges it`, async () => {
    const { page, problems } = await pageWithClient(`send-${rung}`, { transports: [rung] });
    const results = await page.evaluate(async () => {
      const out = [];
      for (let i = 0; i < 5; i++) out.push(await window.client.send({ n: i }));
      return out;
    });
    assert.equal(results.length, 5);
    await page.evaluate(() => window.client.close());
    assert.deepEqual(problems, []);
    await page.close();
  });
}

test('close() stops all traffic: no request, frame or message afterwards', async () => {
  const topic = 'close-stops-traffic';
  const { page, problems } = await pageWithClient(topic, {
    transports: ['polling'],
    heartbeat: { intervalMs: 1000, timeoutMs: 500, maxMissed: 3 },
  });
  await page.evaluate(() => window.client.close());
  assert.equal(await page.evaluate(() => window.client.snapshot().status), 'closed');
  let requestsAfterClose = 0;
  page.on('request', () => requestsAfterClose++);
  page.on('websocket', () => requestsAfterClose++);
  await publishNumbered(topic, 10);
  // Long enough for two heartbeat intervals and a poll round: any leftover timer would fire.
  await page.waitForTimeout(2500);
  assert.equal(requestsAfterClose, 0, 'no request or socket after close()');
  assert.equal(await page.evaluate(() => window.received.length), 0, 'no message after close()');
  assert.deepEqual(problems, []);
  await page.close();
});

test('invalid options throw a HoldfastError that names the option', async () => {
  const { page } = await openPage(browser, `${server.url}/api.html`);
  await waitInPage(page, () => window.ready === true, null, { what: 'the module to load' });
  const cases = [
    [{}, 'url'],
    [{ url: '/realtime', transports: ['carrier-pigeon'] }, 'transports'],
    [{ url: '/realtime', transports: [] }, 'transports'],
    [{ url: '/realtime', backoff: { initialMs: -1 } }, 'backoff'],
    [{ url: '/realtime', heartbeat: { intervalMs: 'soon' } }, 'heartbeat'],
    [{ url: 'ftp://example.test/realtime' }, 'url'],
  ];
  for (const [options, named] of cases) {
    const error = await page.evaluate((options) => {
      try {
        window.holdfast.createClient(options);
        return null;
      } catch (e) {
        return { name: e.name, code: e.code, message: e.message };
      }
    }, options);
    assert.ok(error, `createClient(${JSON.stringify(options)}) must throw`);
    assert.equal(error.name, 'HoldfastError');
    assert.equal(typeof error.code, 'string');
    assert.ok(error.message.includes(named), `"${error.message}" names ${named}`);
  }
  await page.close();
});
