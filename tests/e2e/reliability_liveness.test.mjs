// Reliability scenarios 4, 5, 8 and 9: connections that die under the client — an idle
// cut-off (with and without heartbeats, and one the adaptive heartbeat learns to stay
// under), connections cut every 2 s on each rung, the browser going offline, the page
// hidden while its connection died, and a machine that slept (a clock jump).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, makeSite, startServer } from './harness.mjs';
import {
  RECORDER_PAGE,
  assertDelivery,
  collect,
  errorCodes,
  failureClasses,
  finish,
  openRecorder,
  owedFrom,
  report,
  sleep,
  startProxy,
  steadyPublisher,
  waitForSeq,
  waitForSnapshot,
  waitOpen,
} from './faults.mjs';

const BASE = {
  backoff: { initialMs: 200, maxMs: 2000 },
  timeouts: { openMs: 5000, raceMs: 3000, firstFrameMs: 1500, sseFirstBytesMs: 1500 },
  remember: false,
  probe: false,
};
// No per-IP limits: behind the proxy every request comes from 127.0.0.1.
const LIMITS = ['--rate-per-ip', '0', '--conns-per-ip', '0'];
/// Server heartbeats practically off (an hour).
const NO_HEARTBEAT = ['--heartbeat-ms', '3600000'];

let site, browser;

before(async () => {
  site = makeSite({ 'r.html': RECORDER_PAGE });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  site?.remove();
});

/// A server, a proxy with `faults` in front, a publisher and a recording client.
async function setup({ serverArgs, faults = {}, options, topic, publish = {}, beforeStart }) {
  const server = await startServer(['--static', site.dir, ...LIMITS, '--poll-max-ms', '3000', ...serverArgs]);
  const proxy = await startProxy(server.url, faults);
  const publisher = steadyPublisher({ targets: [server.url], topic, ...publish });
  let rec;
  try {
    rec = await openRecorder(browser, `${proxy.url}/r.html`, { url: '/realtime', params: { topic }, ...BASE, ...options }, { beforeStart });
  } catch (e) {
    await publisher.stop();
    await proxy.stop();
    await server.stop();
    throw e;
  }
  return {
    server,
    proxy,
    publisher,
    ...rec,
    async teardown() {
      await publisher.stop();
      await rec.close();
      await proxy.stop();
      await server.stop();
    },
  };
}

// ----- scenario 4: idle cut-off -----------------------------------------------------------

// Events come slower than the proxy's idle cut-off, so only heartbeats can keep a
// connection alive between them. Scenarios wait for event batches by count, not for a time.

/// Resolves once the page has the `batches`-th batch of `perTick` events counted from the
/// one starting at `firstOwed`; returns how many of the quiet intervals between those
/// batches lasted longer than `idleMs` (printed: each was a chance for the cut-off).
async function waitForBatches(env, firstOwed, perTick, batches, idleMs) {
  await waitForSeq(env.page, firstOwed + perTick * batches - 1, 90_000);
  const starts = env.publisher.accepted.filter(([seq]) => seq >= firstOwed && (seq - firstOwed) % perTick === 0).map(([, , at]) => at);
  let quiet = 0;
  for (let i = 1; i < starts.length && i < batches; i++) if (starts[i] - starts[i - 1] > idleMs) quiet++;
  return quiet;
}

test('scenario 4a: with heartbeats shorter than the idle cut-off, the connection is never cut', { timeout: 120_000 }, async () => {
  // Heartbeats (server 0.3 s, client ping 1 s) are a twentieth of the cut-off: only their
  // absence can let it strike, not their lateness on a loaded machine.
  const IDLE = 6000;
  const env = await setup({
    topic: 's4a',
    serverArgs: ['--heartbeat-ms', '300'],
    faults: { paths: ['/realtime'], idleCutMs: IDLE },
    options: { heartbeat: { intervalMs: 1000, timeoutMs: 500, maxMissed: 3 } },
    publish: { intervalMs: 8000, perTick: 5 },
  });
  try {
    await waitOpen(env.page, 'websocket');
    const firstOwed = owedFrom(env.publisher, 5);
    // Four batches: three quiet intervals, each longer than the cut-off.
    const quiet = await waitForBatches(env, firstOwed, 5, 4, IDLE);
    const stats = await env.proxy.stats();
    const { result, audit: a } = await finish(env.page, env.publisher, { firstOwed });
    const classes = failureClasses(result);
    report('4a', a, result.snapshot.transport, classes, `idle cuts ${stats.cuts.idle} in ${quiet} quiet intervals longer than the cut-off`);
    assertDelivery(assert, a);
    assert.equal(stats.cuts.idle, 0, 'the proxy never found the connection idle');
    assert.equal(result.snapshot.transport, 'websocket');
    assert.deepEqual(classes, [], 'no attempt failed');
    assert.equal(result.attempts.length, 1, 'one connection for the whole scenario');
    assert.deepEqual(env.problems, []);
  } finally {
    await env.teardown();
  }
});

test('scenario 4b: with heartbeats off, the idle connection is cut, and the client reconnects and resumes', { timeout: 90_000 }, async () => {
  const env = await setup({
    topic: 's4b',
    serverArgs: NO_HEARTBEAT,
    faults: { paths: ['/realtime'], idleCutMs: 2000 },
    // Client pings far apart: nothing crosses the connection between events.
    options: { heartbeat: { intervalMs: 60_000, timeoutMs: 5000, maxMissed: 3 } },
    publish: { intervalMs: 3000, perTick: 5 },
  });
  try {
    await waitOpen(env.page, 'websocket');
    const firstOwed = owedFrom(env.publisher, 5);
    await sleep(14_000);
    const stats = await env.proxy.stats();
    const { result, audit: a } = await finish(env.page, env.publisher, { firstOwed });
    const classes = failureClasses(result);
    // With nothing crossing an idle connection it is cut again 2 s after the last event,
    // so the client may be between connections now: its rung is the one it was last open on.
    const rung = result.snapshot.transport ?? result.states.filter((x) => x.status === 'open').at(-1)?.transport ?? null;
    report('4b', a, rung, classes, `idle cuts ${stats.cuts.idle}, status ${result.snapshot.status}`);
    assertDelivery(assert, a);
    assert.ok(stats.cuts.idle >= 2, `the proxy cut idle connections (${stats.cuts.idle})`);
    assert.equal(rung, 'websocket', 'a cut is no reason to fall back');
    assert.ok(
      classes.length > 0 && classes.every((c) => ['closed_by_peer', 'idle_cutoff'].includes(c)),
      `the cuts are classified as closed_by_peer/idle_cutoff: ${JSON.stringify(classes)}`,
    );
    assert.ok(result.attempts.every((x) => x.transport === 'websocket'), 'stayed on WebSocket');
    assert.deepEqual(env.problems, []);
  } finally {
    await env.teardown();
  }
});

test('scenario 4c: with a ping interval just above the idle cut-off, the adaptive heartbeat learns the cut-off and stays under it', { timeout: 120_000 }, async () => {
  // The engine counts a death as an idle cut-off from 5 s of silence up, so this scenario
  // uses a 6 s cut-off (Cloudflare's 100 s, scaled) and a 7 s ping interval.
  const IDLE = 6000;
  const env = await setup({
    topic: 's4c',
    serverArgs: NO_HEARTBEAT,
    faults: { paths: ['/realtime'], idleCutMs: IDLE },
    options: { heartbeat: { intervalMs: 7000, timeoutMs: 2000, maxMissed: 2 } },
    publish: { intervalMs: 8000, perTick: 10 },
  });
  try {
    await waitOpen(env.page, 'websocket');
    const firstOwed = owedFrom(env.publisher, 10);
    // Two cuts after the same idle time: the client names the cause and pings more often.
    await env.page.waitForFunction(
      () => {
        const d = window.client.diagnostics();
        const attempts = Array.isArray(d.attempts[0]) ? d.attempts[0] : d.attempts;
        return attempts.some((a) => a.failure === 'idle_cutoff' || a.failure?.code === 'idle_cutoff' || (Array.isArray(a.failure) && a.failure[0] === 'idle_cutoff'));
      },
      null,
      { timeout: 60_000, polling: 200 },
    ).catch(() => {});
    const learned = await collect(env.page);
    const learnedInterval = await env.page.evaluate(() => window.client.snapshot().pingIntervalMs);
    const cutsThen = (await env.proxy.stats()).cuts.idle;
    // Then three more batches (by count): two quiet intervals, each longer than the
    // cut-off. Without the shorter interval each of them ends in a cut (7 s pings, a 6 s
    // cut-off); with it, fewer do (none, unless the machine stalled for 2 s).
    await waitOpen(env.page, 'websocket');
    const next = env.publisher.next() + 10;
    const quiet = await waitForBatches(env, next, 10, 3, IDLE);
    const cutsAfter = (await env.proxy.stats()).cuts.idle;
    const { result, audit: a } = await finish(env.page, env.publisher, { firstOwed });
    const classes = failureClasses(result);
    report('4c', a, result.snapshot.transport, classes, `ping interval learned ${learnedInterval} ms; idle cuts before learning ${cutsThen}, after ${cutsAfter - cutsThen} in ${quiet} quiet intervals longer than the cut-off`);
    assert.ok(failureClasses(learned).includes('idle_cutoff'), `idle cut-off detected: ${JSON.stringify(failureClasses(learned))}`);
    assert.ok(learnedInterval < IDLE, `the ping interval now stays under the cut-off: ${learnedInterval} ms`);
    assert.ok(cutsAfter - cutsThen < 2, `the shorter interval keeps the connection: ${cutsAfter - cutsThen} idle cuts in the next two quiet intervals`);
    assert.ok(result.notes.some((n) => /ping interval/i.test(n.text)), `a note explains the shorter ping interval: ${JSON.stringify(result.notes)}`);
    assertDelivery(assert, a);
    assert.equal(result.snapshot.transport, 'websocket');
    assert.deepEqual(env.problems, []);
  } finally {
    await env.teardown();
  }
});

test('scenario 4d: SSE through a proxy whose idle cut-off is shorter than the server heartbeat asks the server for heartbeats under it', { timeout: 120_000 }, async () => {
  // SSE cannot ping: after two cuts after the same silence the client reconnects with
  // `heartbeat=<ms>` below the cut-off, and the server heartbeats that often.
  const IDLE = 6000;
  const env = await setup({
    topic: 's4d',
    serverArgs: ['--heartbeat-ms', '7000'],
    faults: { paths: ['/realtime'], idleCutMs: IDLE },
    options: { transports: ['sse'] },
    publish: { intervalMs: 8000, perTick: 10 },
  });
  try {
    await waitOpen(env.page, 'sse');
    const firstOwed = owedFrom(env.publisher, 10);
    await env.page.waitForFunction(
      () => window.client.diagnostics().notes.some((n) => /adaptive heartbeat/.test(n.text)),
      null,
      { timeout: 60_000, polling: 200 },
    ).catch(() => {});
    const learned = await collect(env.page);
    await waitOpen(env.page, 'sse');
    // The heartbeat the session asked the server for (`heartbeat=<ms>` in its URL).
    const asked = await env.page.evaluate(() => {
      const sse = window.client.diagnostics().attempts.filter((a) => a.transport === 'sse' && !a.failure);
      const m = /[?&]heartbeat=(\d+)/.exec(sse.at(-1)?.url ?? '');
      return m ? Number(m[1]) : null;
    });
    const cutsThen = (await env.proxy.stats()).cuts.idle;
    // Three more batches (by count): two quiet intervals, each longer than the cut-off.
    // At the server's own 7 s each ends in a cut; at the interval asked for, fewer do.
    const next = env.publisher.next() + 10;
    const quiet = await waitForBatches(env, next, 10, 3, IDLE);
    const cutsAfter = (await env.proxy.stats()).cuts.idle;
    const { result, audit: a } = await finish(env.page, env.publisher, { firstOwed });
    report('4d', a, result.snapshot.transport, failureClasses(result), `heartbeat asked ${asked} ms; idle cuts before learning ${cutsThen}, after ${cutsAfter - cutsThen} in ${quiet} quiet intervals longer than the cut-off`);
    assert.ok(failureClasses(learned).includes('idle_cutoff'), `idle cut-off detected: ${JSON.stringify(failureClasses(learned))}`);
    assert.ok(result.notes.some((n) => /asking SSE servers for heartbeats every/.test(n.text)), `a note explains the request: ${JSON.stringify(result.notes)}`);
    assert.ok(asked !== null && asked < IDLE, `the SSE session asks for heartbeats under the cut-off: heartbeat=${asked}`);
    assert.ok(cutsAfter - cutsThen < 2, `the server's heartbeats keep the stream: ${cutsAfter - cutsThen} idle cuts in the next two quiet intervals`);
    assertDelivery(assert, a);
    assert.equal(result.snapshot.transport, 'sse');
    assert.deepEqual(env.problems, []);
  } finally {
    await env.teardown();
  }
});

// ----- scenario 5: every connection cut every 2 s ---------------------------------------------

for (const rung of ['websocket', 'sse', 'polling']) {
  test(`scenario 5 (${rung}): with every connection cut every 2 s for 20 s, ${rung} alone delivers every event once, in order`, { timeout: 90_000 }, async () => {
    const env = await setup({
      topic: `s5-${rung}`,
      serverArgs: ['--heartbeat-ms', '1000'],
      options: { transports: [rung], heartbeat: { intervalMs: 3000, timeoutMs: 1500, maxMissed: 2 } },
    });
    try {
      await waitOpen(env.page, rung);
      const firstOwed = owedFrom(env.publisher);
      // Streams are cut 2 s after they open; short requests (polls) rarely live that
      // long, so every 2 s everything open is cut as well.
      await env.proxy.set({ paths: ['/realtime'], cutEveryMs: 2000 });
      for (let i = 0; i < 10; i++) {
        await sleep(2000);
        await env.proxy.cut();
      }
      await env.proxy.set({});
      const stats = await env.proxy.stats();
      const cuts = stats.cuts.every + stats.cuts.manual;
      // The last cut may not have reached the client yet: let it reconnect, then flow.
      await sleep(500);
      await waitOpen(env.page, rung);
      await sleep(2000);
      const { result, audit: a } = await finish(env.page, env.publisher, { firstOwed });
      const classes = failureClasses(result);
      report(`5 (${rung})`, a, result.snapshot.transport, classes, `connections cut ${cuts}, errors [${errorCodes(result)}]`);
      assertDelivery(assert, a);
      // How many of the cuts find a connection open depends on how fast the client comes
      // back (and a poll request is not open while the client waits out its backoff):
      // what matters is that the client was cut, repeatedly, and lost nothing.
      assert.ok(cuts >= 2, `the proxy cut connections (${cuts})`);
      assert.equal(result.snapshot.transport, rung);
      assert.ok(errorCodes(result).length > 0, 'the client reported the lost connections');
      assert.ok(
        classes.every((c) => ['closed_by_peer', 'network_error', 'heartbeat_timeout', 'open_timeout', 'idle_cutoff'].includes(c)),
        `only connection-loss classes: ${JSON.stringify(classes)}`,
      );
      assert.deepEqual(env.problems, []);
    } finally {
      await env.teardown();
    }
  });
}

// ----- scenario 8: offline, then online ---------------------------------------------------------

test('scenario 8: offline pauses the client (status offline, no attempts) and online resumes at once, nothing lost', { timeout: 90_000 }, async () => {
  const env = await setup({
    topic: 's8',
    // Registered before the client's own listeners, so these times come first.
    beforeStart: (page) =>
      page.evaluate(() => {
        window.addEventListener('offline', () => (window.offlineAt = Date.now()));
        window.addEventListener('online', () => (window.onlineAt = Date.now()));
      }),
    serverArgs: ['--heartbeat-ms', '1000'],
    // A long backoff: a reconnect driven by it would come long after `online`.
    options: { backoff: { initialMs: 20_000, maxMs: 30_000 }, heartbeat: { intervalMs: 3000, timeoutMs: 1500, maxMissed: 2 } },
  });
  try {
    await waitOpen(env.page, 'websocket');
    const firstOwed = owedFrom(env.publisher);
    await sleep(1500);
    await env.context.setOffline(true);
    await waitForSnapshot(env.page, `(s) => s.status === 'offline'`, { timeoutMs: 5000, what: 'status offline' });
    await sleep(3000);
    const during = await collect(env.page);
    const retryWhileOffline = await env.page.evaluate(() => window.client.snapshot().nextRetryAt);
    await env.context.setOffline(false);
    await waitOpen(env.page, 'websocket', 10_000);
    await sleep(1500);
    const { result, audit: a } = await finish(env.page, env.publisher, { firstOwed });
    const { offlineAt, onlineAt } = await env.page.evaluate(() => ({ offlineAt: window.offlineAt, onlineAt: window.onlineAt }));
    const classes = failureClasses(result);
    const whileOffline = result.attempts.filter((x) => x.startedAt > offlineAt && x.startedAt < onlineAt);
    const afterOnline = result.attempts.filter((x) => x.startedAt >= onlineAt);
    const delay = afterOnline.length ? afterOnline[0].startedAt - onlineAt : null;
    const onlineNote = result.notes.find((n) => n.at >= onlineAt && /online/i.test(n.text));
    report(8, a, result.snapshot.transport, classes, `errors [${errorCodes(result)}], first attempt ${delay} ms after online`);
    assertDelivery(assert, a);
    assert.ok(offlineAt && onlineAt, 'the browser fired offline and online');
    assert.equal(during.snapshot.status, 'offline');
    assert.ok(errorCodes(result).includes('offline'), 'the client reported offline');
    assert.equal(whileOffline.length, 0, 'no connection attempt while offline');
    // "At once", by cause and order rather than by a time: while offline nothing was
    // scheduled, so the attempt after `online` can only be the answer to it, and the
    // client says so before it starts.
    assert.equal(retryWhileOffline, null, 'no retry scheduled while offline');
    assert.ok(afterOnline.length >= 1, 'reconnected after online');
    assert.ok(onlineNote, `a note says the client is online again: ${JSON.stringify(result.notes)}`);
    assert.ok(afterOnline[0].startedAt >= onlineNote.at, 'the first attempt after online follows that note');
    assert.equal(afterOnline[0].failure, null, 'the first attempt after online worked');
    assert.equal(result.snapshot.transport, 'websocket', 'offline is no reason to fall back');
    assert.ok(classes.every((c) => c === 'offline'), `no rung failure: ${JSON.stringify(classes)}`);
    assert.deepEqual(env.problems, []);
  } finally {
    await env.teardown();
  }
});

// ----- scenario 9: hidden page, sleeping machine ---------------------------------------------

/// Makes the page's WebSocket silently dead (a half-open connection: nothing arrives, no
/// close) while new connections work: every chunk of the open connection is delayed by
/// two minutes, then the fault is lifted for connections opened later.
async function killSilently(proxy) {
  await proxy.set({ paths: ['/realtime'], latencyMs: 120_000 });
  await sleep(100);
}

test('scenario 9a: a page shown again checks its connection at once and replaces a dead one without loss', { timeout: 90_000 }, async () => {
  const env = await setup({
    topic: 's9a',
    serverArgs: ['--heartbeat-ms', '1000'],
    // Ordinary detection would take 20 s + 1000 × 1.5 s, longer than the test may run: the
    // connection can only be replaced by the check on `visible` (one pong timeout).
    options: { heartbeat: { intervalMs: 20_000, timeoutMs: 1500, maxMissed: 1000 } },
  });
  try {
    await waitOpen(env.page, 'websocket');
    const firstOwed = owedFrom(env.publisher);
    await sleep(1000);
    await env.page.evaluate(() => {
      window.__visibility = 'hidden';
      document.dispatchEvent(new Event('visibilitychange'));
    });
    await killSilently(env.proxy);
    await sleep(3000);
    await env.proxy.set({});
    const target = env.publisher.last();
    const visibleAt = await env.page.evaluate(() => {
      window.__visibility = 'visible';
      document.dispatchEvent(new Event('visibilitychange'));
      return Date.now();
    });
    await waitForSeq(env.page, target, 30_000);
    const { result, audit: a } = await finish(env.page, env.publisher, { firstOwed });
    const classes = failureClasses(result);
    report('9a', a, result.snapshot.transport, classes);
    assertDelivery(assert, a);
    assert.ok(classes.includes('heartbeat_timeout'), `the dead connection was found by a ping: ${JSON.stringify(classes)}`);
    const dead = result.attempts.find((x) => x.failure === 'heartbeat_timeout');
    assert.ok(dead.startedAt < visibleAt, 'the connection found dead is the one from before the page was shown');
    assert.ok(result.attempts.some((x) => x.startedAt >= visibleAt && x.failure === null), 'it was replaced after the page was shown');
    assert.equal(result.snapshot.transport, 'websocket');
    assert.deepEqual(env.problems, []);
  } finally {
    await env.teardown();
  }
});

test('scenario 9b: after a simulated sleep (the clock jumps a minute) the client checks its connection and replaces a dead one without loss', { timeout: 90_000 }, async () => {
  const env = await setup({
    topic: 's9b',
    serverArgs: ['--heartbeat-ms', '1000'],
    // Without the clock-jump check a dead connection takes 4 s + 1000 × 1.5 s to notice,
    // longer than the test may run: only that check can replace it.
    options: { heartbeat: { intervalMs: 4000, timeoutMs: 1500, maxMissed: 1000 } },
  });
  try {
    await waitOpen(env.page, 'websocket');
    const firstOwed = owedFrom(env.publisher);
    await sleep(1000);
    // The network died with the machine asleep: first the connection goes silent, then,
    // with no event re-arming the client's timer, the wall clock jumps.
    await killSilently(env.proxy);
    await sleep(500);
    await env.page.evaluate(() => (window.__clockOffset += 60_000));
    await sleep(200);
    await env.proxy.set({});
    const target = env.publisher.last();
    await waitForSeq(env.page, target, 30_000);
    const { result, audit: a } = await finish(env.page, env.publisher, { firstOwed });
    const classes = failureClasses(result);
    const sleptNote = result.notes.find((n) => /slept|sleep/i.test(n.text));
    report('9b', a, result.snapshot.transport, classes, `note: ${sleptNote?.text ?? 'none'}`);
    assertDelivery(assert, a);
    assert.ok(classes.includes('heartbeat_timeout'), `the dead connection was found by a ping: ${JSON.stringify(classes)}`);
    assert.ok(sleptNote, `the client noticed the clock jump: ${JSON.stringify(result.notes)}`);
    assert.equal(result.snapshot.transport, 'websocket');
    assert.deepEqual(env.problems, []);
  } finally {
    await env.teardown();
  }
});
