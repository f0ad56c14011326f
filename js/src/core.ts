// The client wrapper shared by the ESM and script-tag builds. It owns listeners, the cached
// snapshot, send promises and the token provider; every transport decision is made by the
// Rust engine inside the wasm module. Nothing here runs at import time: the wasm module is
// loaded by the first `createClient` (so server rendering can import this file).

import {
  HoldfastError,
  type ClientOptions,
  type Diagnostics,
  type EventMap,
  type HoldfastClient,
  type Snapshot,
  type TransportName,
} from './types.js';

/** The subset of the wasm-bindgen exports the wrapper uses (see src/bindings/). */
export interface WasmClientLike {
  start(): void;
  send(data: unknown): string;
  token(ok: boolean, value: string): void;
  close(): void;
  diagnostics(): unknown;
  free(): void;
}
export interface WasmApi {
  WasmClient: new (id: number, options: object, emit: (batch: unknown[][], ids?: string) => void) => WasmClientLike;
  /** After a wasm call threw: `[clientId, message]` once if that client's call trapped;
   * that client's sockets, timers and listeners are released first. */
  takeTrap(): [number, string] | undefined;
}

/** Loads the wasm module: synchronously when it is inlined, otherwise once, lazily. */
export { HoldfastError };

export type Loader = () => WasmApi | Promise<WasmApi>;

const TRANSPORTS: readonly TransportName[] = ['websocket', 'sse', 'polling'];

/** The snapshot every client starts with, and what server rendering shows. */
export const CONNECTING: Snapshot = Object.freeze({
  status: 'connecting',
  transport: null,
  cursor: null,
  attempt: 0,
  nextRetryAt: null,
  outboxLength: 0,
  lastError: null,
  pingIntervalMs: 30_000,
});

const fail = (option: string, what: string): never => {
  throw new HoldfastError('invalid_option', `options.${option} ${what}`);
};
const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const list = (xs: readonly string[]) => xs.map((x) => `'${x}'`).join(', ');

// The option rules. The engine (src/engine/options.rs) applies the same ones to what it
// reads, with the same names; they are written twice because createClient must throw
// synchronously, before the wasm module has loaded. js/test/option-cases.json holds cases
// that the JS tests and the engine's tests must both judge alike, so the two cannot drift.
const DAY = 86_400_000;
/** [least, most, whole numbers only] for every numeric option, by group ('' = top level). */
type Range = [number, number, boolean?];
const NUMBERS: Record<string, Record<string, Range>> = {
  heartbeat: { intervalMs: [1000, DAY], timeoutMs: [100, DAY], maxMissed: [1, 1000, true], serverSilenceMs: [1000, DAY] },
  backoff: { initialMs: [1, DAY], maxMs: [1, DAY], multiplier: [1, 100], jitter: [0, 1] },
  polling: { waitMs: [0, 120_000], intervalMs: [1, DAY] },
  timeouts: { openMs: [0, DAY], raceMs: [0, DAY], firstFrameMs: [0, DAY], sseFirstBytesMs: [0, DAY] },
  probe: { initialMs: [1000, DAY], maxMs: [1000, 30 * DAY] },
  remember: { ttlMs: [1, 365 * DAY] },
  '': { maxAttempts: [1, 1e9, true], maxFrameBytes: [64, 2 ** 30, true], outboxLimit: [1, 1e6, true] },
};
/** The engine's defaults that cross-field rules compare against. */
const DEFAULTS = { backoff: { initialMs: 500, maxMs: 30_000 }, probe: { initialMs: 30_000, maxMs: 600_000 } };
const URL_KEYS = ['websocket', 'sse', 'polling', 'send'] as const;
const INTEROP = [
  'idField', 'typeField', 'dataField', 'eventsField', 'sinceParam', 'topicParam', 'tokenParam', 'waitParam',
  'heartbeatParam', 'pingText', 'pongType', 'heartbeatType',
] as const;
/** The query parameters the client sets itself, topic first (the order of the engine's check). */
const INTEROP_DEFAULTS: Record<string, string> = {
  topicParam: 'topic', sinceParam: 'since', tokenParam: 'token', waitParam: 'wait', heartbeatParam: 'heartbeat',
};
const KNOWN = [
  'url', 'topic', 'transports', 'urls', 'params', 'since', 'token', 'heartbeat', 'backoff', 'maxAttempts', 'polling',
  'timeouts', 'probe', 'remember', 'eventSource', 'maxFrameBytes', 'outboxLimit', 'interop',
];

function num(name: string, n: unknown, [min, max, int]: Range): number | undefined {
  if (n === undefined) return undefined;
  if (typeof n !== 'number' || !Number.isFinite(n) || n < min || n > max || (int && !Number.isInteger(n)))
    fail(name, `must be ${int ? 'an integer' : 'a number'} from ${min} to ${max}, got ${typeof n === 'string' ? JSON.stringify(n) : String(n)}`);
  return n as number;
}

/** An object of known names (or undefined), its numeric fields checked. */
function group(name: string, v: unknown, known: readonly string[]): Record<string, unknown> | undefined {
  if (v === undefined) return undefined;
  if (!isObj(v)) fail(name, `must be an object of { ${known.join(', ')} }`);
  const ranges = NUMBERS[name] ?? {};
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v as object)) {
    if (!known.includes(k)) fail(`${name}.${k}`, `is not an option (known: ${known.join(', ')})`);
    out[k] = ranges[k] ? num(`${name}.${k}`, x, ranges[k]!) : x;
  }
  return out;
}

/** The URL checks that can be made before the engine runs (it resolves them again). */
function checkUrl(name: string, v: string) {
  const page = typeof location === 'object' && location ? location : null;
  let u: URL;
  try {
    // Without a page (a worker, tests) a path is only checked for syntax here.
    u = new URL(v, page?.href ?? 'http://localhost/');
  } catch {
    return fail(name, `is not a valid URL: ${JSON.stringify(v)}`);
  }
  if (!/^(https?|wss?):$/.test(u.protocol))
    fail(name, `must use http:, https:, ws: or wss: (or be a path on this page's server), not ${u.protocol} in ${JSON.stringify(v)}`);
  // The WHATWG parser forgives `http:host` and `http:///host`; the engine does not.
  if (/^[a-z][a-z0-9+.-]*:/i.test(v.trim()) && !/^[a-z][a-z0-9+.-]*:\/\/[^/?#]/i.test(v.trim()))
    fail(name, `has no host: write scheme://host/path, not ${JSON.stringify(v)}`);
  if (page?.protocol === 'https:' && /^(http|ws):$/.test(u.protocol))
    fail(name, `is not secure but the page is served over https: browsers block it (mixed content); use https:/wss: in ${JSON.stringify(v)}`);
}

const str = (name: string, v: unknown, what = 'must be a non-empty string'): string => {
  if (typeof v !== 'string' || !v) fail(name, what);
  return v as string;
};

/** Checks every option synchronously (so `createClient` throws at once, naming the option
 *  as it is written here) and returns the plain object the engine reads
 *  (`Options::from_js`): the same shape, with `token` reduced to `true`, `since` and the
 *  `params` values as strings. */
export function normalizeOptions(options: ClientOptions): Record<string, unknown> {
  if (!isObj(options)) throw new HoldfastError('invalid_option', 'createClient(options): options must be an object with at least { url }');
  const o = options as unknown as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!KNOWN.includes(k)) fail(k, `is not an option (known: ${KNOWN.join(', ')})`);
  const out: Record<string, unknown> = {};

  let transports: string[] = ['websocket', 'sse', 'polling'];
  if (o.transports !== undefined) {
    const t = o.transports;
    if (!Array.isArray(t) || !t.length) fail('transports', `must be a non-empty array of ${list(TRANSPORTS)}`);
    for (const x of t as unknown[])
      if (!TRANSPORTS.includes(x as TransportName)) fail('transports', `contains ${JSON.stringify(x)}; use ${list(TRANSPORTS)}`);
    if (new Set(t as unknown[]).size !== (t as unknown[]).length) fail('transports', 'lists a transport twice');
    out.transports = transports = [...(t as string[])];
  }
  const urls = group('urls', o.urls, URL_KEYS) ?? {};
  for (const [k, v] of Object.entries(urls)) {
    if (v === undefined) {
      delete urls[k];
      continue;
    }
    checkUrl(`urls.${k}`, str(`urls.${k}`, v, 'must be a non-empty URL or path'));
  }
  if (o.urls !== undefined) out.urls = urls;
  if (o.url === undefined || (typeof o.url === 'string' && !o.url.trim())) {
    // Without a base every rung needs its own URL, and upstream POSTs need urls.send
    // when SSE or polling may carry the session.
    if (!transports.every((t) => urls[t]) || (transports.some((t) => t !== 'websocket') && !urls.send))
      fail('url', 'is required: the base URL or path of the endpoints, e.g. "/realtime" (it may be left out only when `urls` gives every rung in `transports`, and `urls.send` when they include sse or polling)');
  } else {
    checkUrl('url', str('url', o.url, 'must be a string: the base URL or path of the endpoints, e.g. "/realtime"'));
    out.url = o.url;
  }

  if (o.topic !== undefined) out.topic = str('topic', o.topic, "must be a non-empty string when given (leave it out for the server's default topic)");
  if (o.since !== undefined && o.since !== null) {
    const s = o.since;
    if (!(typeof s === 'string' && s.trim()) && !(typeof s === 'number' && Number.isSafeInteger(s) && s >= 0))
      fail('since', 'must be a non-empty event id (a string or a whole number) when given (leave it out to start from now)');
    out.since = String(s);
  }
  if (o.token !== undefined) {
    if (!(typeof o.token === 'string' && o.token) && typeof o.token !== 'function')
      fail('token', 'must be a non-empty string or a function returning a token (or a promise of one)');
    out.token = true;
  }

  const interop = group('interop', o.interop, INTEROP);
  if (interop) {
    for (const [k, v] of Object.entries(interop)) {
      if (v === undefined) delete interop[k];
      else str(`interop.${k}`, v, 'must be a non-empty string (leave it out for the default)');
    }
    out.interop = interop;
  }
  // The query parameters the client sets itself need distinct names (topic, cursor, …).
  const param = (k: string) => (interop?.[k] as string | undefined) ?? INTEROP_DEFAULTS[k]!;
  const paramKeys = Object.keys(INTEROP_DEFAULTS);
  paramKeys.forEach((k, i) => {
    const same = paramKeys.slice(0, i).find((j) => param(j) === param(k));
    if (same) fail(`interop.${k}`, `is "${param(k)}", the same as interop.${same}: each query parameter needs its own name`);
  });
  if (o.params !== undefined) {
    if (!isObj(o.params)) fail('params', 'must be an object of query parameters');
    const p: Record<string, string> = {};
    for (const [k, v] of Object.entries(o.params as object)) {
      if (!k) fail('params', 'must not contain an empty parameter name');
      if (!['string', 'number', 'boolean'].includes(typeof v)) fail(`params.${k}`, 'must be a string, number or boolean');
      if (o.topic !== undefined && k === param('topicParam')) fail(`params.${k}`, 'repeats `topic`: give the topic once, as `topic`');
      const own = paramKeys.slice(1).find((j) => param(j) === k);
      if (own) fail(`params.${k}`, `is a parameter the client sets itself; remove it (to rename the client's parameter, set interop.${own})`);
      p[k] = String(v);
    }
    out.params = p;
  }

  const heartbeat = group('heartbeat', o.heartbeat, ['intervalMs', 'timeoutMs', 'maxMissed', 'serverSilenceMs']);
  if (heartbeat) out.heartbeat = heartbeat;
  const backoff = group('backoff', o.backoff, ['initialMs', 'maxMs', 'multiplier', 'jitter']);
  if (backoff) {
    const b = { ...DEFAULTS.backoff, ...backoff } as { initialMs: number; maxMs: number };
    if (b.maxMs < b.initialMs) fail('backoff.maxMs', `must be at least backoff.initialMs (${b.initialMs} ms), got ${b.maxMs}`);
    out.backoff = backoff;
  }
  const polling = group('polling', o.polling, ['waitMs', 'intervalMs', 'pauseWhenHidden']);
  if (polling) {
    if (polling.pauseWhenHidden !== undefined && typeof polling.pauseWhenHidden !== 'boolean') fail('polling.pauseWhenHidden', 'must be a boolean');
    out.polling = polling;
  }
  const timeouts = group('timeouts', o.timeouts, ['openMs', 'raceMs', 'firstFrameMs', 'sseFirstBytesMs']);
  if (timeouts) out.timeouts = timeouts;
  // `false` turns the feature off, `true` keeps the defaults, an object tunes it.
  for (const [k, known] of [['probe', ['initialMs', 'maxMs']], ['remember', ['ttlMs']]] as const) {
    const v = o[k];
    if (v === undefined) continue;
    if (typeof v === 'boolean') out[k] = v;
    else if (!isObj(v)) fail(k, `must be true, false or an object of { ${known.join(', ')} }`);
    else out[k] = group(k, v, known);
  }
  if (isObj(out.probe)) {
    const p = { ...DEFAULTS.probe, ...out.probe } as { initialMs: number; maxMs: number };
    if (p.maxMs < p.initialMs) fail('probe.maxMs', `must be at least probe.initialMs (${p.initialMs} ms), got ${p.maxMs}`);
  }
  const es = o.eventSource;
  if (es !== undefined && typeof es !== 'boolean' && !(Array.isArray(es) && es.every((x) => typeof x === 'string')))
    fail('eventSource', 'must be true, false, or the list of event types to listen for');
  if (es !== undefined) out.eventSource = es;
  for (const [k, range] of Object.entries(NUMBERS[''])) if (o[k] !== undefined) out[k] = num(k, o[k], range);
  return out;
}

type Listener = (v: never) => void;

/** Loaded modules by loader (one per build in practice; tests pass their own fakes). */
const apis = new WeakMap<Loader, WasmApi | Promise<WasmApi>>();
let nextId = 1;
/** Live clients by wasm client id, so a trap reaches the client it happened in. */
const live = new Map<number, (message: string) => void>();

/** After an exception that may have come out of the wasm module: when a client's call
 * trapped (a panic, a stack overflow), report it and restart that client on the next task. */
function checkTrap(a: WasmApi | undefined) {
  if (!a) return;
  let t: [number, string] | undefined;
  try {
    t = a.takeTrap();
  } catch {
    // Releasing the trapped client's sockets and timers trapped as well; the module has
    // forgotten them, and a second call still names the client.
    t = a.takeTrap();
  }
  if (!t) return;
  console.error(`holdfast: internal error (a bug; please report it): ${t[1]}`);
  const f = live.get(t[0]);
  if (f) setTimeout(() => f(t[1]));
}

function ready(load: Loader): WasmApi | Promise<WasmApi> {
  let got = apis.get(load);
  if (!got) {
    const done = (a: WasmApi) => {
      // A trap inside a browser callback (a socket event, a timer, a fetch) does not pass
      // through the wrapper: it reaches the page as an uncaught error or rejection.
      if (typeof addEventListener === 'function') {
        const f = () => checkTrap(a);
        addEventListener('error', f);
        addEventListener('unhandledrejection', f);
      }
      apis.set(load, a);
      return a;
    };
    const r = load();
    got =
      r instanceof Promise
        ? r.then(done, (e) => {
            apis.delete(load); // a later client may try again
            throw e;
          })
        : done(r);
    apis.set(load, got);
  }
  return got;
}

// A listener's exception is the app's bug: report it like an uncaught error (without
// stopping the other listeners).
const report = (e: unknown) =>
  typeof reportError === 'function'
    ? reportError(e)
    : setTimeout(() => {
        throw e;
      });

const toError = (e: unknown): HoldfastError =>
  e instanceof HoldfastError
    ? e
    : Array.isArray(e)
      ? new HoldfastError(e[0], e[1], e[2])
      : new HoldfastError('internal', `Holdfast failed inside its wasm module: ${String((e as Error)?.message ?? e)}`);

/** Creates a client with the given wasm loader (see index.ts and script.ts). */
export function createClientWith(load: Loader, options: ClientOptions): HoldfastClient {
  const normalized = normalizeOptions(options);
  const listeners: { [K in keyof EventMap]: Set<Listener> } = {
    message: new Set(), state: new Set(), gap: new Set(), error: new Set(),
  };
  const stores = new Set<() => void>();
  const acks = new Map<string, [() => void, (e: HoldfastError) => void]>();
  const queued: [unknown, () => void, (e: HoldfastError) => void][] = [];
  let snap: Snapshot = normalized.since ? Object.freeze({ ...CONNECTING, cursor: normalized.since as string }) : CONNECTING;
  let inner: WasmClientLike | null = null;
  let id = 0;
  let closed = false;
  let panics = 0;
  let lastTokenCall = 0;

  const dispatch = <K extends keyof EventMap>(type: K, value: EventMap[K]) => {
    for (const fn of listeners[type]) {
      try {
        (fn as (v: EventMap[K]) => void)(value);
      } catch (e) {
        report(e);
      }
    }
  };
  const setSnap = (s: Snapshot) => {
    snap = s;
    dispatch('state', s);
    for (const fn of stores) {
      try {
        fn();
      } catch (e) {
        report(e);
      }
    }
  };

  const provideToken = () => {
    const t = options.token;
    const call = ++lastTokenCall;
    const answer = (ok: boolean, v: unknown) => {
      // A late answer for a superseded request, or after close, is dropped.
      if (inner && call === lastTokenCall) inner.token(ok, String(v));
    };
    new Promise<string>((res) => res(typeof t === 'function' ? t() : (t as string))).then(
      (v) => (typeof v === 'string' ? answer(true, v) : answer(false, 'the token provider returned ' + typeof v + ', not a string')),
      (e) => answer(false, (e as Error)?.message ?? String(e)),
    );
  };

  // `ids`: the batch's message ids in one string (one decode out of wasm per batch, not
  // one per event); a message entry's id `1` means "the next of them" (src/bindings).
  const onBatch = (batch: unknown[][], ids?: string) => {
    const idList = ids === undefined ? [] : ids.split('\0');
    let next = 0;
    let lastId: string | null = null;
    for (const ev of batch) {
      switch (ev[0] as string) {
        case 'message': {
          const id = ev[1] === 1 ? idList[next++] : (ev[1] as string | null);
          if (id !== null) lastId = id;
          if (!closed) dispatch('message', { id, type: ev[2] as string, data: ev[3] });
          break;
        }
        case 'state': {
          const s = ev[1] as Record<string, unknown>;
          if (s.lastError) s.lastError = toError(s.lastError);
          setSnap(Object.freeze(s) as unknown as Snapshot);
          break;
        }
        case 'cursor':
          // Only the cursor moved (every delivered batch): patch the last snapshot.
          setSnap(Object.freeze({ ...snap, cursor: ev.length > 1 ? (ev[1] as string | null) : lastId }));
          break;
        case 'gap':
          if (!closed) dispatch('gap', { reason: ev[1] as string, cursor: ev[2] as string | null, oldest: ev[3] as string | null });
          break;
        case 'error':
          dispatch('error', toError(ev.slice(1)));
          break;
        case 'ack':
        case 'fail': {
          const p = acks.get(ev[1] as string);
          acks.delete(ev[1] as string);
          if (p) ev[0] === 'ack' ? p[0]() : p[1](toError(ev.slice(2)));
          else early.set(ev[1] as string, ev); // settled before send() returned its id
          break;
        }
        case 'token':
          provideToken();
          break;
      }
    }
  };

  const early = new Map<string, unknown[]>();
  const sendNow = (data: unknown, resolve: () => void, reject: (e: HoldfastError) => void) => {
    try {
      const msgId = inner!.send(data);
      const ev = early.get(msgId);
      early.delete(msgId);
      if (!ev) acks.set(msgId, [resolve, reject]);
      else if (ev[0] === 'ack') resolve();
      else reject(toError(ev.slice(2)));
    } catch (e) {
      checkTrap(wasmApi);
      reject(toError(e));
    }
  };

  let wasmApi: WasmApi | undefined;
  // True while createClient itself runs (the wasm module was already loaded): nobody can
  // listen yet, so a failure throws from createClient and the start waits for a microtask.
  let creating = true;
  // The engine has started: sends go to it, not to `queued`.
  let running = false;
  const boot = (a: WasmApi) => {
    wasmApi = a;
    if (closed) return;
    id = nextId++;
    const opts = snap.cursor ? { ...normalized, since: snap.cursor } : normalized;
    let w: WasmClientLike;
    try {
      w = inner = new a.WasmClient(id, opts, onBatch);
    } catch (e) {
      checkTrap(a);
      const err = toError(e);
      if (creating) throw err;
      // A later boot (the module loaded afterwards, or a restart after a trap): the app's
      // listeners are attached by now and hear it.
      closed = true;
      setSnap(Object.freeze({ ...snap, status: 'closed', lastError: err }));
      dispatch('error', err);
      return;
    }
    live.set(id, recover);
    const start = () => {
      if (closed || inner !== w) return; // closed (or restarted) before the start
      try {
        w.start();
      } catch {
        checkTrap(a); // schedules the recovery
        return;
      }
      running = true;
      for (const [d, res, rej] of queued.splice(0)) sendNow(d, res, rej);
    };
    // Whatever the start emits (state, a first error) reaches the listeners the app
    // attaches right after createClient returns.
    if (creating) queueMicrotask(start);
    else start();
  };

  // A trap in the wasm module: report it as a typed error and start a fresh engine from
  // the last cursor (the broken one is abandoned; its callbacks see a poisoned state and
  // do nothing). Repeated traps close the client rather than loop.
  function recover(message: string) {
    live.delete(id);
    inner = null;
    running = false;
    const err = new HoldfastError('internal', `Holdfast hit an internal error (${message}); ${++panics > 3 ? 'giving up' : 'restarting from the last event'}. Please report this.`);
    dispatch('error', err);
    for (const [, rej] of acks.values()) rej(err);
    acks.clear();
    if (panics > 3) {
      closed = true;
      setSnap(Object.freeze({ ...snap, status: 'closed', lastError: err }));
    } else if (wasmApi) boot(wasmApi);
  }

  const loaded = ready(load);
  if (loaded instanceof Promise)
    loaded.then(boot, (e) => {
      const err = new HoldfastError('wasm_load_failed', `could not load holdfast_wasm_bg.wasm: ${(e as Error)?.message ?? e}. Serve it beside index.js with Content-Type application/wasm.`);
      closed = true;
      setSnap(Object.freeze({ ...snap, status: 'closed', lastError: err }));
      dispatch('error', err);
    });
  else boot(loaded);
  creating = false;

  const client: HoldfastClient = {
    on(type, fn) {
      const set = listeners[type];
      if (!set) throw new HoldfastError('invalid_option', `client.on(${JSON.stringify(type)}): unknown event; use message, state, gap or error`);
      if (typeof fn !== 'function') throw new HoldfastError('invalid_option', `client.on(${JSON.stringify(type)}, fn): fn must be a function`);
      // Wrap so the same function can be added twice and removed once per on() call.
      const l: Listener = (v) => (fn as (v: unknown) => void)(v);
      set.add(l);
      return () => void set.delete(l);
    },
    subscribe(fn) {
      const l = () => fn();
      stores.add(l);
      return () => void stores.delete(l);
    },
    snapshot: () => snap,
    send(data) {
      return new Promise<void>((resolve, reject) => {
        if (closed) reject(new HoldfastError('already_closed', 'client.send() after client.close(): create a new client to send'));
        else if (inner && running) sendNow(data, resolve, reject);
        else queued.push([data, resolve, reject]);
      });
    },
    diagnostics() {
      const [attempts, notes] = ((inner && inner.diagnostics()) || [[], []]) as [Record<string, unknown>[], [number, string][]];
      return Object.freeze({
        snapshot: snap,
        attempts: Object.freeze(
          attempts.map((a) => Object.freeze({ ...a, failure: a.failure ? toError(a.failure) : null })),
        ),
        notes: Object.freeze(notes.map(([at, text]) => Object.freeze({ at, text }))),
      }) as unknown as Diagnostics;
    },
    close() {
      if (closed) return;
      closed = true;
      live.delete(id);
      const w = inner;
      if (w) {
        // The engine closes every connection and timer and emits the final state and the
        // failures of unsent messages through onBatch, synchronously.
        try {
          w.close();
        } catch (e) {
          checkTrap(wasmApi);
          report(e);
        }
        // free() after the current call stack, which may still be inside the wasm module.
        queueMicrotask(() => {
          try {
            w.free();
          } catch {
            /* already freed by a panic recovery */
          }
        });
      } else setSnap(Object.freeze({ ...snap, status: 'closed' }));
      const err = new HoldfastError('closed', 'the client was closed before the server acknowledged this message');
      for (const [, , rej] of queued.splice(0)) rej(err);
      for (const [, rej] of acks.values()) rej(err);
      acks.clear();
      for (const s of Object.values(listeners)) s.clear();
      stores.clear();
      inner = null;
    },
  };
  return client;
}
