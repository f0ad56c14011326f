// Reliability scenario 13: the client behind real nginx, configured with the templates of
// examples/deploy/nginx/ (rendered into a temporary prefix, run as a plain process):
// the recommended config ends on WebSocket, the one without Upgrade headers on SSE, and the
// one that buffers (and gzips) SSE is detected and ends on polling. Events flow the whole
// time and none is lost or repeated.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, makeSite, startServer } from './harness.mjs';
import {
  RECORDER_PAGE,
  assertDelivery,
  failureClasses,
  finish,
  openRecorder,
  owedFrom,
  report,
  sleep,
  startNginx,
  steadyPublisher,
  waitOpen,
} from './faults.mjs';

const OPTIONS = {
  backoff: { initialMs: 200, maxMs: 2000 },
  timeouts: { openMs: 5000, raceMs: 3000, firstFrameMs: 1500, sseFirstBytesMs: 1500 },
  heartbeat: { intervalMs: 3000, timeoutMs: 1500, maxMissed: 2 },
  remember: false,
  probe: false,
};

let site, server, browser;

before(async () => {
  site = makeSite({ 'r.html': RECORDER_PAGE });
  server = await startServer(['--static', site.dir, '--trust-proxy', '--heartbeat-ms', '1000', '--poll-max-ms', '3000', '--rate-per-ip', '0']);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  site?.remove();
});

async function throughNginx(label, template, { topic, transports, expectRung }) {
  let nginx, publisher, rec;
  try {
    nginx = await startNginx(template, { upstreams: [new URL(server.url).host] });
    publisher = steadyPublisher({ targets: [server.url], topic });
    rec = await openRecorder(browser, `${nginx.url}/r.html`, { url: '/realtime', params: { topic }, ...OPTIONS, ...(transports ? { transports } : {}) });
    await waitOpen(rec.page, expectRung);
    const firstOwed = owedFrom(publisher);
    await sleep(4000);
    const { result, audit: a } = await finish(rec.page, publisher, { firstOwed });
    const classes = failureClasses(result);
    report(`13 (${label})`, a, result.snapshot.transport, classes);
    return { result, audit: a, classes, problems: rec.problems };
  } finally {
    await publisher?.stop();
    await rec?.close();
    await nginx?.stop();
  }
}

test('scenario 13a: through nginx with the recommended config the client stays on WebSocket and loses nothing', { timeout: 90_000 }, async () => {
  const { result, audit: a, classes, problems } = await throughNginx('recommended', 'holdfast.conf.template', { topic: 's13a', expectRung: 'websocket' });
  assertDelivery(assert, a);
  assert.equal(result.snapshot.transport, 'websocket');
  assert.deepEqual(classes, [], 'no attempt failed');
  assert.deepEqual(problems, []);
});

test('scenario 13b: through nginx without the Upgrade headers the client names the refused upgrade and ends on SSE', { timeout: 90_000 }, async () => {
  const { result, audit: a, classes, problems } = await throughNginx('no upgrade headers', 'broken-no-upgrade.conf.template', { topic: 's13b', expectRung: 'sse' });
  assertDelivery(assert, a);
  assert.equal(result.snapshot.transport, 'sse');
  assert.deepEqual(classes, ['upgrade_refused']);
  assert.deepEqual(problems, []);
});

test('scenario 13c: through nginx buffering and gzipping SSE the client detects the buffering and ends on polling', { timeout: 90_000 }, async () => {
  // That config carries WebSocket correctly; the ladder without it exercises the SSE step.
  const { result, audit: a, classes, problems } = await throughNginx('SSE buffered', 'broken-sse-buffered.conf.template', {
    topic: 's13c',
    transports: ['sse', 'polling'],
    expectRung: 'polling',
  });
  assertDelivery(assert, a);
  assert.equal(result.snapshot.transport, 'polling');
  assert.deepEqual(classes, ['sse_buffered']);
  assert.deepEqual(problems, []);
});
