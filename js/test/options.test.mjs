// The options contract of createClient (js/src/core.ts), against a scripted fake of the wasm
// module: the cases shared with the engine (option-cases.json; the engine's tests judge the
// same file), every row of PROTOCOL.md §10 exactly as written (protocol-s10.json; the
// engine's tests check the URLs each row produces), and every createClient/useHoldfast
// example in the READMEs. Run with `node --test js/test/`.

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { build } from 'esbuild';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const read = (path) => readFileSync(join(root, path), 'utf8');
const cases = JSON.parse(read('js/test/option-cases.json'));
const section10 = JSON.parse(read('js/test/protocol-s10.json'));
let core;

before(async () => {
  const out = join(mkdtempSync(join(tmpdir(), 'holdfast-options-')), 'core.mjs');
  await build({ entryPoints: [join(root, 'js/src/core.ts')], bundle: true, format: 'esm', platform: 'neutral', outfile: out, logLevel: 'error' });
  core = await import(pathToFileURL(out));
});

/** A stand-in for the wasm module that records what each engine was given. */
function fakeWasm() {
  const clients = [];
  const api = {
    takeTrap: () => undefined,
    WasmClient: class {
      constructor(id, options, emit) {
        Object.assign(this, { id, options, emit, started: false });
        clients.push(this);
      }
      start() {
        this.started = true;
      }
      send() {
        return 'm-1';
      }
      token() {}
      close() {}
      diagnostics() {
        return [[], []];
      }
      free() {}
    },
  };
  return { api, clients };
}

const create = (options) => {
  const w = fakeWasm();
  const client = core.createClientWith(() => w.api, options);
  return { client, w };
};

test('every valid shared case creates a client (the engine accepts the same cases)', () => {
  for (const options of cases.valid) {
    const { client, w } = create(options);
    assert.equal(w.clients.length, 1, JSON.stringify(options));
    assert.equal(client.snapshot().status, 'connecting');
    client.close();
  }
});

test('every invalid shared case throws invalid_option from createClient naming the option, before anything is created', () => {
  for (const [options, name] of cases.invalid) {
    const w = fakeWasm();
    assert.throws(
      () => core.createClientWith(() => w.api, options),
      (e) => e instanceof core.HoldfastError && e.code === 'invalid_option' && e.message.startsWith(`options.${name} `),
      `${JSON.stringify(options)} must be rejected naming options.${name}`,
    );
    assert.equal(w.clients.length, 0);
  }
});

test('the rejections say what to do, in the JS names', () => {
  const message = (options) => {
    try {
      create(options);
    } catch (e) {
      return e.message;
    }
    assert.fail(`${JSON.stringify(options)} was accepted`);
  };
  assert.equal(message({ url: '/r', polling: { intervalMs: 0 } }), 'options.polling.intervalMs must be a number from 1 to 86400000, got 0');
  assert.equal(message({ url: '/r', outboxLimit: 0 }), 'options.outboxLimit must be an integer from 1 to 1000000, got 0');
  assert.equal(message({ url: '/r', backoff: { maxMs: 100 } }), 'options.backoff.maxMs must be at least backoff.initialMs (500 ms), got 100');
  assert.match(message({ url: '/r', interop: { pingText: '' } }), /^options\.interop\.pingText must be a non-empty string \(leave it out for the default\)$/);
  assert.match(message({ url: '/r', params: { since: '5' } }), /set interop\.sinceParam/);
  assert.match(message({ url: '/r', topic: 'a', params: { topic: 'b' } }), /give the topic once, as `topic`/);
  assert.match(message({ transports: ['sse'], urls: { sse: '/sse/logs' } }), /urls\.send/);
});

test('any positive heartbeat pair is accepted, the timeout longer than the interval included', () => {
  for (const heartbeat of [{ intervalMs: 1000, timeoutMs: 1500 }, { intervalMs: 15000, timeoutMs: 30000 }, { intervalMs: 5000, timeoutMs: 5000 }]) {
    const { w } = create({ url: '/r', heartbeat });
    assert.deepEqual(w.clients[0].options.heartbeat, heartbeat);
  }
});

test('the engine receives the options in the shape it reads: interop and topic as given, token as true, since and params as strings', () => {
  const interop = {
    idField: 'seq', typeField: 'event', dataField: 'payload', eventsField: 'items', sinceParam: 'cursor',
    topicParam: 'deploymentId', tokenParam: 'access_token', waitParam: 'hold', heartbeatParam: 'hb',
    pingText: 'ping', pongType: 'PONG', heartbeatType: 'keepalive',
  };
  const { w } = create({ url: '/r', topic: 'deploy-123', since: 42, token: () => 't', params: { tenant: 7, on: true }, interop });
  const o = w.clients[0].options;
  assert.deepEqual(o.interop, interop);
  assert.equal(o.topic, 'deploy-123');
  assert.equal(o.token, true);
  assert.equal(o.since, '42');
  assert.deepEqual(o.params, { tenant: '7', on: 'true' });
});

/** The options literals of PROTOCOL.md §10's table, in order. */
function section10Literals() {
  const md = read('PROTOCOL.md');
  const start = md.indexOf('\n## 10.');
  assert.ok(start > 0, 'PROTOCOL.md has a §10');
  const end = md.indexOf('\n## ', start + 1);
  const rows = md
    .slice(start, end < 0 ? undefined : end)
    .split('\n')
    .filter((l) => l.startsWith('|') && !/^\|[-| ]+\|$/.test(l));
  const first = rows.findIndex((l) => l.includes('`createClient` options'));
  assert.ok(first >= 0, 'the table of backends is there');
  const out = [];
  for (const row of rows.slice(first + 1)) {
    const cells = row.split(' | ');
    const last = cells.at(-1).replace(/\s*\|$/, '');
    if (!last.startsWith('`{')) break; // the next table (interop names)
    out.push(last.slice(1, -1));
  }
  return out;
}

test('every row of PROTOCOL.md §10 is valid exactly as written and reaches the engine intact', () => {
  const literals = section10Literals();
  assert.deepEqual(literals, section10.rows.map((r) => r.doc), 'protocol-s10.json follows the document');
  for (const row of section10.rows) {
    const options = new Function(`return (${row.doc});`)();
    assert.deepEqual(options, row.options, 'the JSON the engine test reads is the literal');
    const { client, w } = create(options);
    assert.equal(client.snapshot().status, 'connecting');
    const given = w.clients[0].options;
    assert.deepEqual(given.urls, options.urls);
    assert.deepEqual(given.interop, options.interop);
    assert.equal(given.topic, options.topic);
    for (const t of options.transports ?? ['websocket', 'sse', 'polling']) assert.ok(row.urls[t], `a URL is expected for ${t}`);
  }
});

/** `createClient({...})` and `useHoldfast({...})` object literals in a markdown file. */
function examples(path) {
  const md = read(path);
  const found = [];
  for (const m of md.matchAll(/(?:createClient|useHoldfast)\(\s*\{/g)) {
    const from = m.index + m[0].length - 1;
    let depth = 0;
    let i = from;
    for (; i < md.length; i++) {
      if (md[i] === '{') depth++;
      else if (md[i] === '}' && --depth === 0) break;
    }
    found.push(md.slice(from, i + 1));
  }
  return found;
}

test('every createClient and useHoldfast example in the READMEs is valid', () => {
  // Names the examples take from their surroundings (`id`, a token function) get a value.
  const scope = new Proxy({}, { has: (_, k) => typeof k === 'string', get: (_, k) => (k === Symbol.unscopables ? undefined : 'x') });
  let n = 0;
  for (const path of ['README.md', 'pkg-template/README.md']) {
    for (const literal of examples(path)) {
      const options = new Function('scope', `with (scope) { return (${literal}); }`)(scope);
      assert.doesNotThrow(() => create(options).client.close(), `${path}: ${literal}`);
      n++;
    }
  }
  assert.ok(n >= 4, `found ${n} examples`);
});
