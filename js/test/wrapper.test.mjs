// The JS wrapper (js/src/core.ts) against a scripted fake of the wasm module: option
// checking, snapshot caching, listeners, sends, the token provider, close, and recovery
// from a wasm trap. No browser, no server: run with `node --test js/test/`.

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { build } from 'esbuild';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
let core;

before(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'holdfast-wrapper-'));
  {
    const name = 'core';
    const out = join(dir, `${name}.mjs`);
    await build({
      entryPoints: [join(root, `js/src/${name}.ts`)],
      bundle: true,
      format: 'esm',
      platform: 'neutral',
      outfile: out,
      logLevel: 'error',
    });
  }
  core = await import(pathToFileURL(join(dir, 'core.mjs')));
});

/** A scripted stand-in for the wasm module: records calls, lets the test emit batches. */
function fakeWasm() {
  // `trap(client, message)` plays a trapped call: the module then reports it once.
  // `releaseTraps` plays a trap while the module releases the trapped client's adapters:
  // that many takeTrap() calls throw before one answers.
  const w = { clients: [], trapped: undefined, releaseTraps: 0 };
  w.trap = (client, message) => {
    w.trapped = [client.id, message];
    return new WebAssembly.RuntimeError('unreachable');
  };
  w.api = {
    takeTrap() {
      if (w.trapped && w.releaseTraps > 0) {
        w.releaseTraps--;
        throw new WebAssembly.RuntimeError('unreachable');
      }
      const t = w.trapped;
      w.trapped = undefined;
      return t;
    },
    WasmClient: class {
      constructor(id, options, emit) {
        if (options.url === '/bad') throw ['invalid_url', 'the URL "/bad" is relative but there is no page to resolve it against', null];
        Object.assign(this, { id, options, emit, calls: [], nextMsg: 1, freed: false });
        w.clients.push(this);
      }
      start() {
        this.calls.push(['start']);
        this.emit([['state', { status: 'connecting', transport: null, cursor: null, attempt: 0, lastError: null }]]);
      }
      send(data) {
        if (data === 'full') throw ['outbox_full', 'the outbox is full', null];
        if (data === 'trap') throw w.trap(this, 'index out of bounds at src/engine/machine.rs:1');
        const id = `m-${this.nextMsg++}`;
        this.calls.push(['send', id, data]);
        if (data === 'sync-ack') this.emit([['ack', id]]);
        return id;
      }
      token(ok, value) {
        this.calls.push(['token', ok, value]);
      }
      close() {
        this.calls.push(['close']);
        this.emit([['state', { status: 'closed', transport: null, cursor: null, attempt: 0, lastError: null }]]);
      }
      diagnostics() {
        return [
          [
            { transport: 'websocket', probe: false, url: 'ws://h/realtime/ws', startedAt: 1, openedAt: null, firstDataAt: null, endedAt: 2, failure: ['upgrade_refused', 'refused', 'websocket'] },
            { transport: 'sse', probe: false, url: 'http://h/realtime/sse', startedAt: 3, openedAt: 4, firstDataAt: 4, endedAt: null, failure: null },
          ],
          [[2, 'fell back to sse']],
        ];
      }
      free() {
        this.freed = true;
      }
    },
  };
  return w;
}

const open = (cursor = null) => ['state', { status: 'open', transport: 'websocket', cursor, attempt: 0, lastError: null }];
const tick = () => new Promise((r) => setTimeout(r, 0));

test('invalid options throw a HoldfastError naming the option, synchronously', () => {
  const w = fakeWasm();
  const bad = [
    [undefined, 'options'],
    [{}, 'options.url'],
    [{ url: '' }, 'options.url'],
    [{ url: '/r', transports: ['carrier-pigeon'] }, 'options.transports'],
    [{ url: '/r', transports: [] }, 'options.transports'],
    [{ url: '/r', transports: ['sse', 'sse'] }, 'options.transports'],
    [{ url: '/r', heartbeat: { intervalMs: -1 } }, 'options.heartbeat.intervalMs'],
    [{ url: '/r', polling: { intervalMs: 0 } }, 'options.polling.intervalMs'],
    [{ url: '/r', outboxLimit: 0 }, 'options.outboxLimit'],
    [{ url: '/r', backoff: { initialMs: 1000, maxMs: 10 } }, 'options.backoff.maxMs'],
    [{ url: '/r', backoff: { jitter: 2 } }, 'options.backoff.jitter'],
    [{ url: '/r', params: { topic: {} } }, 'options.params.topic'],
    [{ url: '/r', token: 42 }, 'options.token'],
    [{ url: '/r', urls: { carrier: '/x' } }, 'options.urls.carrier'],
    [{ url: '/r', maxFrameBytes: 1.5 }, 'options.maxFrameBytes'],
    [{ url: '/r', tranports: ['sse'] }, 'options.tranports'],
    [{ url: 'ftp://example.test/realtime' }, 'options.url'],
    [{ url: 'http://[bad' }, 'options.url'],
    [{ url: '/r', urls: { websocket: 'gopher://x/ws' } }, 'options.urls.websocket'],
    [{ url: 'http:///x' }, 'options.url'],
    [{ url: '/r', eventSource: 'yes' }, 'options.eventSource'],
    [{ url: '/r', params: { tenant: () => 'acme' } }, 'options.params.tenant'],
  ];
  for (const [options, name] of bad) {
    assert.throws(
      () => core.createClientWith(() => w.api, options),
      (e) => e instanceof core.HoldfastError && e.code === 'invalid_option' && e.message.includes(name),
      `${JSON.stringify(options)} must be rejected naming ${name}`,
    );
  }
  assert.equal(w.clients.length, 0, 'nothing was created');
});

test('an error from the engine while createClient runs is thrown from createClient, not emitted to nobody', () => {
  const w = fakeWasm();
  assert.throws(
    () => core.createClientWith(() => w.api, { url: '/bad' }),
    (e) => e instanceof core.HoldfastError && e.code === 'invalid_url' && /no page/.test(e.message),
  );
});

test('an error from the engine after the module loaded reaches the listeners attached after createClient', async () => {
  const w = fakeWasm();
  let release;
  const loaded = new Promise((r) => (release = r));
  const c = core.createClientWith(() => loaded.then(() => w.api), { url: '/bad' });
  const errors = [];
  const states = [];
  c.on('error', (e) => errors.push(e.code));
  c.on('state', (s) => states.push(s.status));
  release();
  await tick();
  assert.deepEqual(errors, ['invalid_url']);
  assert.deepEqual(states, ['closed']);
  assert.equal(c.snapshot().lastError.code, 'invalid_url');
  assert.ok(c.snapshot().lastError instanceof core.HoldfastError);
});

test('the engine starts after createClient returns, so listeners hear everything it emits', async () => {
  const w = fakeWasm();
  const c = core.createClientWith(() => w.api, { url: '/r' });
  assert.deepEqual(w.clients[0].calls, [], 'created, not started yet');
  const p = c.send('early');
  const states = [];
  c.on('state', (s) => states.push(s.status));
  await tick();
  assert.equal(w.clients[0].calls[0][0], 'start');
  assert.deepEqual(states, ['connecting'], 'the first state reached the listener');
  const send = w.clients[0].calls.find((x) => x[0] === 'send');
  assert.equal(send[2], 'early', 'a send made before the start went to the engine after it');
  w.clients[0].emit([['ack', send[1]]]);
  await p;
  const closedEarly = core.createClientWith(() => w.api, { url: '/r' });
  closedEarly.close();
  await tick();
  assert.deepEqual(w.clients[1].calls.map((x) => x[0]), ['close'], 'a client closed at once never starts');
});

test('snapshot() returns the same object until the state changes, and subscribe() says when', () => {
  const w = fakeWasm();
  const c = core.createClientWith(() => w.api, { url: '/r' });
  const first = c.snapshot();
  assert.equal(first, c.snapshot(), 'stable identity');
  assert.ok(Object.isFrozen(first));
  let notified = 0;
  const unsubscribe = c.subscribe(() => notified++);
  w.clients[0].emit([open('1')]);
  assert.equal(notified, 1);
  const second = c.snapshot();
  assert.notEqual(second, first);
  assert.equal(second, c.snapshot());
  assert.deepEqual([second.status, second.transport, second.cursor], ['open', 'websocket', '1']);
  unsubscribe();
  w.clients[0].emit([open('2')]);
  assert.equal(notified, 1, 'no call after unsubscribe');
});

test('a cursor-only change patches the snapshot: a new frozen object, the rest kept, listeners told', () => {
  const w = fakeWasm();
  const c = core.createClientWith(() => w.api, { url: '/r' });
  const states = [];
  let notified = 0;
  c.on('state', (s) => states.push(s));
  c.subscribe(() => notified++);
  w.clients[0].emit([open('1')]);
  const before = c.snapshot();
  w.clients[0].emit([['message', '2', 'tick', {}], ['cursor', '2']]);
  const after = c.snapshot();
  assert.notEqual(after, before);
  assert.ok(Object.isFrozen(after));
  assert.deepEqual({ ...after }, { ...before, cursor: '2' });
  assert.equal(after, c.snapshot(), 'stable until the next change');
  assert.equal(notified, 2);
  assert.equal(states.at(-1), after);
});

test('a batch may carry its message ids in one string, and its cursor entry may point at the last of them', () => {
  const w = fakeWasm();
  const c = core.createClientWith(() => w.api, { url: '/r' });
  const got = [];
  c.on('message', (m) => got.push(m.id));
  w.clients[0].emit([open('1')]);
  w.clients[0].emit(
    [['message', 1, 'tick', {}], ['message', null, 'tick', {}], ['message', 'a\0b', 'tick', {}], ['message', 1, 'tick', {}], ['cursor']],
    '2\u00003-0',
  );
  assert.deepEqual(got, ['2', null, 'a\0b', '3-0']);
  assert.equal(c.snapshot().cursor, '3-0', '["cursor"] is the last message id');
  w.clients[0].emit([['cursor', '9']]);
  assert.equal(c.snapshot().cursor, '9');
});

test('the initial snapshot is connecting, shared, and carries the starting cursor', () => {
  assert.equal(core.CONNECTING.status, 'connecting');
  assert.equal(core.CONNECTING.transport, null);
  const c = core.createClientWith(() => new Promise(() => {}), { url: '/r', since: 42 });
  assert.equal(c.snapshot().cursor, '42');
  assert.equal(c.snapshot().status, 'connecting');
});

test('on() delivers each kind to its listeners and returns an unsubscribe function', () => {
  const w = fakeWasm();
  const c = core.createClientWith(() => w.api, { url: '/r' });
  const got = [];
  const off = c.on('message', (m) => got.push(['message', m]));
  c.on('gap', (g) => got.push(['gap', g]));
  c.on('error', (e) => got.push(['error', e]));
  w.clients[0].emit([
    ['message', '1', 'tick', { seq: 1 }],
    ['gap', 'history trimmed', '1', '5'],
    ['error', 'upgrade_refused', 'the proxy refused the WebSocket upgrade', 'websocket'],
  ]);
  assert.deepEqual(got[0], ['message', { id: '1', type: 'tick', data: { seq: 1 } }]);
  assert.deepEqual(got[1], ['gap', { reason: 'history trimmed', cursor: '1', oldest: '5' }]);
  assert.ok(got[2][1] instanceof core.HoldfastError);
  assert.deepEqual([got[2][1].code, got[2][1].transport], ['upgrade_refused', 'websocket']);
  off();
  w.clients[0].emit([['message', '2', 'tick', { seq: 2 }]]);
  assert.equal(got.length, 3, 'no message after unsubscribe');
  assert.throws(() => c.on('mesage', () => {}), (e) => e.code === 'invalid_option');
});

test('a throwing listener does not stop the others', async () => {
  const w = fakeWasm();
  const c = core.createClientWith(() => w.api, { url: '/r' });
  const got = [];
  c.on('message', () => {
    throw new Error('listener bug');
  });
  c.on('message', (m) => got.push(m.id));
  const uncaught = [];
  globalThis.reportError = (e) => uncaught.push(e.message);
  try {
    w.clients[0].emit([['message', '1', 'tick', null]]);
  } finally {
    delete globalThis.reportError;
  }
  assert.deepEqual(got, ['1']);
  assert.deepEqual(uncaught, ['listener bug'], 'the error is reported, not swallowed');
});

test('send() resolves on ack and rejects with the typed error on failure', async () => {
  const w = fakeWasm();
  const c = core.createClientWith(() => w.api, { url: '/r' });
  await tick(); // the engine starts after createClient returns
  const a = c.send({ x: 1 });
  const b = c.send({ x: 2 });
  const [, id1, data1] = w.clients[0].calls.find((x) => x[0] === 'send');
  assert.deepEqual(data1, { x: 1 });
  w.clients[0].emit([['ack', id1], ['fail', 'm-2', 'send_failed', 'the server rejected it (HTTP 413)', 'sse']]);
  await a;
  await assert.rejects(b, (e) => e instanceof core.HoldfastError && e.code === 'send_failed');
  await assert.rejects(c.send('full'), (e) => e.code === 'outbox_full');
});

test('sends made before the wasm module loaded are queued, then sent', async () => {
  const w = fakeWasm();
  let release;
  const loaded = new Promise((r) => (release = r));
  const c = core.createClientWith(() => loaded.then(() => w.api), { url: '/r' });
  const p = c.send('early');
  assert.equal(w.clients.length, 0);
  release();
  await tick();
  await tick();
  assert.equal(w.clients.length, 1);
  const send = w.clients[0].calls.find((x) => x[0] === 'send');
  assert.equal(send[2], 'early');
  w.clients[0].emit([['ack', send[1]]]);
  await p;
});

test('the token provider may be a string, a function or an async function', async () => {
  for (const token of ['abc', () => 'abc', async () => 'abc']) {
    const w = fakeWasm();
    core.createClientWith(() => w.api, { url: '/r', token });
    assert.equal(w.clients[0].options.token, true, 'the engine is told a provider exists');
    w.clients[0].emit([['token']]);
    await tick();
    await tick();
    assert.deepEqual(w.clients[0].calls.at(-1), ['token', true, 'abc']);
  }
});

test('a failing token provider is reported to the engine with its message', async () => {
  const w = fakeWasm();
  core.createClientWith(() => w.api, {
    url: '/r',
    token: async () => {
      throw new Error('session expired');
    },
  });
  w.clients[0].emit([['token']]);
  await tick();
  await tick();
  assert.deepEqual(w.clients[0].calls.at(-1), ['token', false, 'session expired']);
});

test('close() closes the engine, rejects pending sends, drops listeners and frees the wasm client', async () => {
  const w = fakeWasm();
  const c = core.createClientWith(() => w.api, { url: '/r' });
  const states = [];
  c.on('state', (s) => states.push(s.status));
  const pending = c.send('x');
  c.close();
  assert.equal(c.snapshot().status, 'closed');
  assert.deepEqual(states.at(-1), 'closed', 'the final state reaches listeners');
  // Lifecycle vs misuse: the pending message failed because the client closed
  // (`closed`); a send after close() is the app's mistake (`already_closed`).
  await assert.rejects(pending, (e) => e.code === 'closed');
  await assert.rejects(c.send('y'), (e) => e.code === 'already_closed');
  await tick();
  assert.ok(w.clients[0].freed, 'the wasm client was freed');
  c.close(); // idempotent
  assert.equal(w.clients[0].calls.filter((x) => x[0] === 'close').length, 1);
});

test('a trap in a call from the wrapper is reported as a typed error and the client restarts from its cursor', async () => {
  const w = fakeWasm();
  const c = core.createClientWith(() => w.api, { url: '/r' });
  await tick(); // the engine starts after createClient returns
  w.clients[0].emit([open('7')]);
  const errors = [];
  c.on('error', (e) => errors.push(e));
  await assert.rejects(c.send('trap'), (e) => e.code === 'internal');
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(errors[0].code, 'internal');
  assert.match(errors[0].message, /index out of bounds/);
  assert.equal(w.clients.length, 2, 'a fresh engine was created');
  assert.equal(w.clients[1].options.since, '7', 'it resumes from the last cursor');
  c.send('after').catch(() => {});
  assert.deepEqual(w.clients[1].calls.at(-1).slice(2), ['after'], 'the new engine takes the sends');
});

test('a trap while the module releases a trapped client still restarts that client', async () => {
  const w = fakeWasm();
  const c = core.createClientWith(() => w.api, { url: '/r' });
  await tick(); // the engine starts after createClient returns
  w.clients[0].emit([open('5')]);
  const errors = [];
  c.on('error', (e) => errors.push(e));
  w.releaseTraps = 1;
  await assert.rejects(c.send('trap'), (e) => e.code === 'internal');
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(w.releaseTraps, 0, 'the first takeTrap() trapped');
  assert.equal(errors.length, 1);
  assert.equal(w.clients.length, 2, 'a fresh engine was created');
  assert.equal(w.clients[1].options.since, '5');
});

test('a trap inside a browser callback (an uncaught error on the page) restarts the client it happened in', async () => {
  const pageListeners = {};
  globalThis.addEventListener = (type, f) => (pageListeners[type] ??= []).push(f);
  try {
    const w = fakeWasm();
    const a = core.createClientWith(() => w.api, { url: '/a' });
    const b = core.createClientWith(() => w.api, { url: '/b' });
    await tick();
    assert.deepEqual(Object.keys(pageListeners).sort(), ['error', 'unhandledrejection']);
    w.clients[1].emit([open('3')]);
    const errorsA = [];
    const errorsB = [];
    a.on('error', (e) => errorsA.push(e));
    b.on('error', (e) => errorsB.push(e));
    // An error of the page's own: nothing trapped, nothing restarts.
    for (const f of pageListeners.error) f({ error: new Error('the app threw') });
    w.trap(w.clients[1], 'a wasm trap');
    for (const f of pageListeners.unhandledrejection) f({ reason: new WebAssembly.RuntimeError('unreachable') });
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(errorsA.length, 0, 'the other client is untouched');
    assert.equal(errorsB.length, 1);
    assert.equal(errorsB[0].code, 'internal');
    assert.equal(w.clients.length, 3, 'one fresh engine, for the client that trapped');
    assert.equal(w.clients[2].options.url, '/b');
    assert.equal(w.clients[2].options.since, '3');
  } finally {
    delete globalThis.addEventListener;
  }
});

test('diagnostics() lists attempts with typed failures and the notes', () => {
  const w = fakeWasm();
  const c = core.createClientWith(() => w.api, { url: '/r' });
  const d = c.diagnostics();
  assert.equal(d.snapshot, c.snapshot());
  assert.equal(d.attempts.length, 2);
  assert.ok(d.attempts[0].failure instanceof core.HoldfastError);
  assert.equal(d.attempts[0].failure.code, 'upgrade_refused');
  assert.equal(d.attempts[1].failure, null);
  assert.deepEqual(d.notes, [{ at: 2, text: 'fell back to sse' }]);
  assert.ok(Object.isFrozen(d.attempts[0]));
});

test('an acknowledgement that arrives before send() returned still resolves the promise', async () => {
  const w = fakeWasm();
  const c = core.createClientWith(() => w.api, { url: '/r' });
  await c.send('sync-ack');
});
