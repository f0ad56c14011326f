// Bad input: a server that sends what it must not — malformed JSON, binary frames, frames
// over the limit, events with wrongly typed fields, repeated ids, broken SSE lines, garbage
// poll bodies — and a real server publishing an event over the client's size limit.
// The client must report each as a typed error (`bad_frame`, `frame_too_large`), keep the
// stream (same connection where the rung allows it), deliver every good event exactly once
// and in order, and never panic (a wasm panic shows as an `internal` error or a page error).
//
// The misbehaving server is a small Node HTTP + WebSocket server written here; it also
// serves the recording page and the built package, so everything is same-origin.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFileSync, existsSync } from 'node:fs';
import { extname, join, normalize } from 'node:path';
import { WebSocketServer } from 'ws';
import { launchBrowser, makeSite, startServer } from './harness.mjs';
import {
  RECORDER_PAGE,
  assertDelivery,
  audit,
  collect,
  errorCodes,
  failureClasses,
  finish,
  openRecorder,
  owedFrom,
  report,
  sleep,
  steadyPublisher,
  waitForSeq,
  waitOpen,
} from './faults.mjs';

const LIMIT = 8192; // the client's maxFrameBytes in these tests
const OPTIONS = {
  backoff: { initialMs: 200, maxMs: 1000 },
  timeouts: { openMs: 5000, raceMs: 3000, firstFrameMs: 1500, sseFirstBytesMs: 1500 },
  heartbeat: { intervalMs: 3000, timeoutMs: 1500, maxMissed: 2 },
  remember: false,
  probe: false,
  maxFrameBytes: LIMIT,
};

let site, browser;

before(async () => {
  site = makeSite({ 'r.html': RECORDER_PAGE });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  site?.remove();
});

const id = (seq) => `1-${seq}`;
const good = (seq) => ({ id: id(seq), type: 'tick', data: { seq } });
const big = 'x'.repeat(3 * LIMIT);

const TYPES = { '.js': 'text/javascript', '.wasm': 'application/wasm', '.html': 'text/html', '.json': 'application/json' };

/// A server speaking broken protocol. `script` handlers get (req|socket, url, counters).
async function evilServer({ ws, sse, poll }) {
  const counts = { ws: 0, sse: 0, poll: 0 };
  const timers = new Set();
  const http = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/realtime/sse' && sse) {
      counts.sse++;
      return sse(req, res, url, counts.sse);
    }
    if (url.pathname === '/realtime/poll' && poll) {
      counts.poll++;
      return poll(req, res, url, counts.poll);
    }
    const file = normalize(join(site.dir, url.pathname));
    if (file.startsWith(site.dir) && existsSync(file) && !file.endsWith('/')) {
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
      return res.end(readFileSync(file));
    }
    res.writeHead(404).end();
  });
  const wss = new WebSocketServer({ noServer: true });
  http.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname !== '/realtime/ws' || !ws) return socket.destroy();
    wss.handleUpgrade(req, socket, head, (sock) => {
      counts.ws++;
      ws(sock, url, counts.ws);
    });
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${http.address().port}`,
    counts,
    every(ms, f) {
      const t = setInterval(f, ms);
      timers.add(t);
      return t;
    },
    async stop() {
      for (const t of timers) clearInterval(t);
      for (const c of wss.clients) c.terminate();
      wss.close();
      http.closeAllConnections?.();
      await new Promise((r) => http.close(r));
    },
  };
}

/// Waits for the events, then checks: all good ones once and in order, errors typed, no panic.
async function check(label, rec, lastSeq, expectRung) {
  await waitForSeq(rec.page, lastSeq, 20_000).catch(() => {});
  await sleep(300);
  // A bad poll body costs the request: let the client poll again before reading its state.
  await waitOpen(rec.page, expectRung, 10_000).catch(() => {});
  const result = await collect(rec.page);
  const a = audit({ messages: result.messages, gaps: result.gaps, firstOwed: 1, lastSent: lastSeq });
  const codes = result.errors.map((e) => e.code);
  report(label, a, result.snapshot.transport, failureClasses(result), `errors [${codes.join(', ')}]`);
  assertDelivery(assert, a);
  assert.equal(result.snapshot.transport, expectRung);
  assert.ok(!codes.includes('internal'), `no panic (internal error): ${JSON.stringify(result.errors)}`);
  assert.deepEqual(rec.problems, [], 'no page error');
  for (const e of result.errors) {
    assert.equal(typeof e.message, 'string');
    assert.ok(e.message.length > 10, `error ${e.code} has a human message`);
  }
  return { result, codes };
}

test('bad input over WebSocket: malformed, binary, oversized and mistyped frames are typed errors, repeats are dropped, the socket stays open', { timeout: 60_000 }, async () => {
  let evil, rec;
  try {
    evil = await evilServer({
      ws(sock) {
        const send = (x) => sock.send(typeof x === 'string' ? x : JSON.stringify(x));
        send({ type: 'hello', cursor: '1-0', heartbeatMs: 60_000, topic: 't', transport: 'websocket' });
        send(good(1));
        send(good(2));
        send('{not json'); // 1 bad_frame
        sock.send(Buffer.from([0xff, 0xfe, 0xfd, 0x00])); // 2 bad_frame: binary, not UTF-8
        send(good(3));
        // frame_too_large, and no id of its own: with one, its id would become the cursor
        // (so a reconnect does not fetch it again) and must be in order.
        send({ type: 'tick', data: { pad: big } });
        send('[1,2,3]'); // 3 bad_frame: not event objects
        send(good(4));
        send('{"id":"1-91","type":5,"data":{}}'); // 4 bad_frame: type is a number
        send('{"id":{"x":1},"type":"tick","data":{"seq":-1}}'); // 5 bad_frame: id is an object
        send(good(2)); // a repeat: dropped silently
        send('"a string"'); // 6 bad_frame
        send('['.repeat(3000) + ']'.repeat(3000)); // 7 bad_frame: deep nesting, no stack overflow
        send({ type: 'error', code: 'weird', message: 'the server complains' }); // server_error, stream kept
        send(good(5));
        send([good(6), good(7)]); // a batch
        evil.every(1000, () => sock.readyState === 1 && send({ type: 'heartbeat' }));
      },
    });
    rec = await openRecorder(browser, `${evil.url}/r.html`, { url: '/realtime', transports: ['websocket'], ...OPTIONS });
    await waitOpen(rec.page, 'websocket');
    const { codes } = await check('bad input (websocket)', rec, 7, 'websocket');
    assert.equal(codes.filter((c) => c === 'bad_frame').length, 7, `seven bad frames reported: ${codes}`);
    assert.equal(codes.filter((c) => c === 'frame_too_large').length, 1, `one oversized frame reported: ${codes}`);
    assert.equal(codes.filter((c) => c === 'server_error').length, 1, `the error frame reported as server_error: ${codes}`);
    assert.equal(evil.counts.ws, 1, 'one WebSocket for the whole stream: bad frames do not cost the connection');
  } finally {
    await rec?.close();
    await evil?.stop();
  }
});

test('bad input over SSE: a BOM, CR and CRLF line ends, split events, unknown fields and non-JSON data are parsed as WHATWG says; an oversized event is a typed error, skipped, and the stream goes on', { timeout: 60_000 }, async () => {
  let evil, rec;
  const ev = (e) => `id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e.data)}\n\n`;
  try {
    evil = await evilServer({
      sse(req, res, url, n) {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        const since = url.searchParams.get('since') ?? req.headers['last-event-id'];
        const hello = (cursor) => `event: hello\ndata: ${JSON.stringify({ type: 'hello', cursor, heartbeatMs: 60_000, topic: 't', transport: 'sse' })}\n\n`;
        if (n === 1) {
          res.write('\uFEFF: ok\n\n'); // a byte-order mark first
          res.write(hello('1-0'));
          res.write(ev(good(1)));
          // Not JSON: SSE data is text to EventSource too, so it is delivered as a string.
          res.write('event: tick\ndata: {broken\n\n');
          res.write(ev(good(2)).replaceAll('\n', '\r\n')); // CRLF line endings
          res.write(ev(good(3)).replaceAll('\n', '\r')); // CR line endings
          res.write('data\n\n'); // a field without colon: an empty `message` (WHATWG)
          res.write('foo: bar\nretry: abc\n: a comment\n\n'); // unknown fields, bad retry
          const four = ev(good(4));
          res.write(four.slice(0, 7)); // one event split over three chunks
          setTimeout(() => res.write(four.slice(7, 20)), 50);
          setTimeout(() => {
            res.write(four.slice(20));
            res.write(ev(good(2))); // a repeat (non-increasing id): dropped silently
            res.write(ev(good(5)));
            // Over the limit (and without an id of its own): the parser skips it to its
            // blank line and goes on.
            res.write(`event: tick\ndata: ${JSON.stringify({ pad: big })}\n\n`);
            for (let s = 6; s <= 8; s++) res.write(ev(good(s)));
            const t = evil.every(1000, () => res.write(': heartbeat\n\n'));
            res.on('close', () => clearInterval(t));
          }, 100);
          return;
        }
        res.write(': ok\n\n');
        res.write(hello(since ?? '1-0'));
        const from = since ? Number(since.split('-')[1]) + 1 : 1;
        for (let s = from; s <= 8; s++) res.write(ev(good(s)));
        const t = evil.every(1000, () => res.write(': heartbeat\n\n'));
        res.on('close', () => clearInterval(t));
      },
    });
    rec = await openRecorder(browser, `${evil.url}/r.html`, { url: '/realtime', transports: ['sse'], ...OPTIONS });
    await waitOpen(rec.page, 'sse');
    const { codes, result } = await check('bad input (sse)', rec, 8, 'sse');
    assert.deepEqual(
      result.otherSamples,
      [
        { id: null, type: 'tick', data: '{broken' },
        { id: null, type: 'message', data: '' },
      ],
      'the non-JSON event arrives as text; a bare `data` line is an empty message',
    );
    assert.equal(codes.filter((c) => c === 'frame_too_large').length, 1, `one oversized event reported: ${codes}`);
    assert.equal(evil.counts.sse, 1, 'the oversized event is skipped: no reconnect (it would fetch it again)');
  } finally {
    await rec?.close();
    await evil?.stop();
  }
});

test('bad input over polling: garbage and wrongly shaped bodies are typed errors, an oversized event in a batch is reported and passed, a replay of old events is dropped, and polling goes on', { timeout: 60_000 }, async () => {
  let evil, rec;
  const LAST = 9;
  // Good events take even sequence numbers in their ids, so an oversized event can sit
  // between two of them (as it would on a real server).
  const goodp = (seq) => ({ ...good(seq), id: id(2 * seq) });
  try {
    evil = await evilServer({
      poll(req, res, url, n) {
        const since = url.searchParams.get('since');
        const after = since ? Math.floor(Number(since.split('-')[1]) / 2) : 0;
        const json = (body) => {
          res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
          res.end(typeof body === 'string' ? body : JSON.stringify(body));
        };
        if (n === 3) return json('{"events": ['); // bad_frame: truncated JSON
        if (n === 5) return json({ events: 'nope', cursor: 'x' }); // bad_frame: events not an array
        if (n === 6) return json({ events: [goodp(1), goodp(2)], cursor: id(4) }); // a replay: dropped silently
        if (n === 7) {
          // frame_too_large for one event; the good ones around it are delivered.
          const huge = { id: id(2 * after + 1), type: 'tick', data: { pad: big } };
          const next = [after + 1, after + 2].filter((s) => s <= LAST).map(goodp);
          return json({ events: [huge, ...next], cursor: (next.at(-1) ?? huge).id });
        }
        if (n === 9) return json('<html><body>502 Bad Gateway</body></html>'); // bad_frame: an error page
        const events = [];
        for (let s = after + 1; s <= Math.min(after + 2, LAST); s++) events.push(goodp(s));
        if (!events.length) return setTimeout(() => json({ events: [], cursor: since ?? '1-0' }), 300);
        json({ events, cursor: events.at(-1).id });
      },
    });
    rec = await openRecorder(browser, `${evil.url}/r.html`, { url: '/realtime', transports: ['polling'], ...OPTIONS });
    await waitOpen(rec.page, 'polling');
    const { codes } = await check('bad input (polling)', rec, LAST, 'polling');
    assert.equal(codes.filter((c) => c === 'bad_frame').length, 3, `three bad bodies reported: ${codes}`);
    assert.equal(codes.filter((c) => c === 'frame_too_large').length, 1, `one oversized event reported: ${codes}`);
  } finally {
    await rec?.close();
    await evil?.stop();
  }
});

// ----- a real server publishing an event over the client's limit -----------------------------

for (const rung of ['websocket', 'sse', 'polling']) {
  test(`an event over the size limit published to the real server is reported on ${rung} and the events after it still arrive`, { timeout: 60_000 }, async () => {
    let server, publisher, rec;
    const topic = `huge-${rung}`;
    try {
      server = await startServer(['--static', site.dir, '--max-frame-bytes', String(4 << 20), '--rate-per-ip', '0', '--heartbeat-ms', '1000', '--poll-max-ms', '3000']);
      publisher = steadyPublisher({ targets: [server.url], topic });
      rec = await openRecorder(browser, `${server.url}/r.html`, {
        url: '/realtime',
        params: { topic },
        transports: [rung],
        ...OPTIONS,
        maxFrameBytes: 1 << 20,
      });
      await waitOpen(rec.page, rung);
      const firstOwed = owedFrom(publisher);
      await sleep(1000);
      // 1.5 MiB of data: over the client's 1 MiB limit, under the server's 4 MiB.
      const res = await fetch(`${server.url}/realtime/publish?topic=${topic}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer e2e-publish-key' },
        body: JSON.stringify({ type: 'huge', data: { pad: 'y'.repeat(1536 * 1024) } }),
      });
      assert.equal(res.status, 200, 'the server took the huge event');
      await sleep(3000);
      const { result, audit: a } = await finish(rec.page, publisher, { firstOwed, timeoutMs: 15_000 });
      const codes = errorCodes(result);
      report(`huge event (${rung})`, a, result.snapshot.transport, failureClasses(result), `errors [${codes}]`);
      assertDelivery(assert, a);
      assert.ok(codes.includes('frame_too_large'), `frame_too_large reported: ${codes}`);
      assert.equal(result.snapshot.transport, rung);
      assert.ok(!codes.includes('internal'), 'no panic');
      assert.deepEqual(rec.problems, []);
    } finally {
      await publisher?.stop();
      await rec?.close();
      await server?.stop();
    }
  });
}
