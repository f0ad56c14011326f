// Reliability scenarios 10 and 11: the server (or something in front of it) says "not now"
// or "not with that token".
//
// 10. A rate limiter answers 429 with Retry-After: the client waits as asked between rounds
//     (no storm: the requests the proxy answered are counted), then resumes without loss.
// 11. The token expires: the refusal (close 4402, token_expired) makes the client call its
//     token function again and reconnect on the same rung; it never falls back.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, makeSite, startServer } from './harness.mjs';
import {
  RECORDER_PAGE,
  assertDelivery,
  errorCodes,
  failureClasses,
  finish,
  mintToken,
  openRecorder,
  owedFrom,
  report,
  sleep,
  startProxy,
  steadyPublisher,
  waitOpen,
} from './faults.mjs';

const LIMITS = ['--rate-per-ip', '0', '--conns-per-ip', '0', '--heartbeat-ms', '1000', '--poll-max-ms', '3000'];

let site, browser;

before(async () => {
  site = makeSite({ 'r.html': RECORDER_PAGE });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  site?.remove();
});

test('scenario 10: a 429 with Retry-After makes the client wait as asked between attempts (no storm), then resume without loss', { timeout: 90_000 }, async () => {
  const RETRY_AFTER_S = 3;
  let server, proxy, publisher, rec;
  try {
    server = await startServer(['--static', site.dir, ...LIMITS]);
    proxy = await startProxy(server.url);
    publisher = steadyPublisher({ targets: [server.url], topic: 's10' });
    // A short backoff: a client that ignored Retry-After would retry every few hundred ms.
    rec = await openRecorder(browser, `${proxy.url}/r.html`, {
      url: '/realtime',
      params: { topic: 's10' },
      backoff: { initialMs: 100, maxMs: 400 },
      timeouts: { openMs: 5000, raceMs: 3000, firstFrameMs: 1500, sseFirstBytesMs: 1500 },
      heartbeat: { intervalMs: 3000, timeoutMs: 1500, maxMissed: 2 },
      remember: false,
      probe: false,
    });
    await waitOpen(rec.page, 'websocket');
    const firstOwed = owedFrom(publisher);
    await sleep(1000);
    const before = await proxy.stats();
    const startedAt = Date.now();
    await proxy.set({ paths: ['/realtime/ws', '/realtime/sse', '/realtime/poll'], respondStatus: 429, retryAfterSecs: RETRY_AFTER_S });
    await proxy.cut();
    await sleep(10_000);
    await proxy.set({});
    const windowMs = Date.now() - startedAt;
    const during = await proxy.stats();
    await waitOpen(rec.page, 'websocket', 20_000);
    await sleep(1500);
    const { result, audit: a } = await finish(rec.page, publisher, { firstOwed });
    const classes = failureClasses(result);
    const injected = during.statusesInjected - before.statusesInjected;
    // Each round tries at most every rung once; rounds are at least Retry-After apart.
    const maxRounds = Math.floor(windowMs / (RETRY_AFTER_S * 1000)) + 1;
    report(10, a, result.snapshot.transport, classes, `429s answered ${injected} in ${windowMs} ms (at most ${3 * maxRounds} allowed)`);
    assertDelivery(assert, a);
    assert.ok(classes.includes('rate_limited'), `failure classes ${JSON.stringify(classes)} include rate_limited`);
    assert.ok(injected >= 1, 'the limiter answered at least once');
    assert.ok(injected <= 3 * maxRounds, `no storm: ${injected} requests answered 429 in ${windowMs} ms`);
    // Directly: every attempt after a rate-limited one starts at least Retry-After later.
    const attempts = result.attempts;
    for (let i = 0; i + 1 < attempts.length; i++) {
      if (attempts[i].failure !== 'rate_limited') continue;
      const nextStart = attempts.slice(i + 1).find((x) => !x.probe)?.startedAt;
      if (nextStart !== undefined)
        assert.ok(nextStart - attempts[i].startedAt >= RETRY_AFTER_S * 1000, `attempt ${i + 1} waited ${nextStart - attempts[i].startedAt} ms after a 429`);
    }
    assert.equal(result.snapshot.transport, 'websocket', 'a rate limit is no reason to stay on a lower rung');
    assert.deepEqual(rec.problems, []);
  } finally {
    await publisher?.stop();
    await rec?.close();
    await proxy?.stop();
    await server?.stop();
  }
});

test('scenario 11: an expired token makes the client ask its token function again and reconnect on the same rung at once, without loss or an unauthorized error', { timeout: 90_000 }, async () => {
  const SECRET = 'e2e-token-secret-0123456789';
  let server, proxy, publisher, rec;
  let minted = 0;
  try {
    server = await startServer(['--static', site.dir, ...LIMITS, '--token-secret', SECRET]);
    proxy = await startProxy(server.url);
    publisher = steadyPublisher({ targets: [server.url], topic: 's11' });
    rec = await openRecorder(
      browser,
      `${proxy.url}/r.html`,
      {
        url: '/realtime',
        params: { topic: 's11' },
        backoff: { initialMs: 200, maxMs: 2000 },
        timeouts: { openMs: 5000, raceMs: 3000, firstFrameMs: 1500, sseFirstBytesMs: 1500 },
        heartbeat: { intervalMs: 3000, timeoutMs: 1500, maxMissed: 2 },
        remember: false,
        probe: false,
      },
      {
        tokenFunction: 'mintToken',
        // The first token lives 3 s; the ones asked for after it expired live 10 minutes.
        beforeStart: (page) =>
          page.exposeFunction('mintToken', () => {
            minted++;
            const now = Math.floor(Date.now() / 1000);
            return mintToken(SECRET, { exp: now + (minted === 1 ? 3 : 600), topics: ['s11'] });
          }),
      },
    );
    await waitOpen(rec.page, 'websocket');
    const firstOwed = owedFrom(publisher);
    // Let the token expire under the open connection (the server checks it on connect),
    // then cut: the reconnect carries the expired token.
    await sleep(4500);
    await proxy.cut();
    await sleep(500);
    await waitOpen(rec.page, 'websocket', 20_000);
    await sleep(2000);
    const { result, audit: a } = await finish(rec.page, publisher, { firstOwed });
    const classes = failureClasses(result);
    report(11, a, result.snapshot.transport, classes, `token function called ${result.tokenCalls} times, errors [${errorCodes(result)}]`);
    assertDelivery(assert, a);
    assert.ok(result.tokenCalls >= 2, `the token function was called again (${result.tokenCalls})`);
    // The token had worked, so its rejection is an expiry: a fresh token at once, no error.
    assert.ok(!classes.includes('unauthorized'), `failure classes ${JSON.stringify(classes)} do not include unauthorized`);
    assert.ok(!errorCodes(result).includes('unauthorized'), `no unauthorized error reached the app: [${errorCodes(result)}]`);
    assert.ok(result.notes.some((n) => n.text.includes('after it had worked')), 'the diagnostics note the refresh');
    assert.deepEqual([...new Set(result.attempts.map((x) => x.transport))], ['websocket'], 'no fallback to another rung');
    assert.equal(result.snapshot.transport, 'websocket');
    assert.deepEqual(rec.problems, []);
  } finally {
    await publisher?.stop();
    await rec?.close();
    await proxy?.stop();
    await server?.stop();
  }
});
