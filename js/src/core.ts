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

function num(name: string, n: unknown, [min, max, int]: [number, number, boolean?]): number | undefined {
  if (n === undefined) return undefined;
  if (typeof n !== 'number' || !Number.isFinite(n) || n < min || n > max || (int && !Number.isInteger(n)))
    fail(name, `must be ${int ? 'an integer' : 'a number'} from ${min} to ${max}, got ${String(n)}`);
  return n as number;
}

function checkNumbers(
  name: string,
  v: unknown,
  fields: Record<string, [number, number, boolean?]>,
): Record<string, number> | undefined {
  if (v === undefined) return undefined;
  if (!isObj(v)) fail(name, 'must be an object');
  const out: Record<string, number> = {};
  for (const [k, n] of Object.entries(v as object)) {
    if (!fields[k]) fail(`${name}.${k}`, `is not an option (known: ${Object.keys(fields).join(', ')})`);
    const x = num(`${name}.${k}`, n, fields[k]!);
    if (x !== undefined) out[k] = x;
  }
  return out;
}

/** The URL checks that can be made before the engine runs (it checks again, fully). */
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
  if (page?.protocol === 'https:' && /^(http|ws):$/.test(u.protocol))
    fail(name, `is not secure but the page is served over https: browsers block it (mixed content); use https:/wss: in ${JSON.stringify(v)}`);
}

const KNOWN = [
  'url', 'transports', 'urls', 'params', 'since', 'token', 'heartbeat', 'backoff', 'polling',
  'timeouts', 'probe', 'eventSource', 'maxFrameBytes', 'outboxLimit', 'remember', 'maxAttempts',
];
const DAY = 86_400_000;

/** Checks the shape of the options synchronously (so `createClient` throws at once) and
 *  returns the plain object handed to the engine, which checks the values again. */
export function normalizeOptions(options: ClientOptions): Record<string, unknown> {
  if (!isObj(options)) throw new HoldfastError('invalid_option', 'createClient(options): options must be an object with at least { url }');
  const o = options as unknown as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!KNOWN.includes(k)) fail(k, `is not an option (known: ${KNOWN.join(', ')})`);
  if (typeof o.url !== 'string' || !o.url.trim()) fail('url', 'is required: the base URL or path of the realtime endpoints, e.g. "/realtime"');
  checkUrl('url', o.url as string);
  const out: Record<string, unknown> = { url: o.url };
  if (o.transports !== undefined) {
    const t = o.transports;
    if (!Array.isArray(t) || !t.length) fail('transports', `must be a non-empty array of ${TRANSPORTS.map((x) => `'${x}'`).join(', ')}`);
    for (const x of t as unknown[])
      if (!TRANSPORTS.includes(x as TransportName)) fail('transports', `contains ${JSON.stringify(x)}; use ${TRANSPORTS.map((x) => `'${x}'`).join(', ')}`);
    if (new Set(t as unknown[]).size !== (t as unknown[]).length) fail('transports', 'lists a transport twice');
    out.transports = [...(t as string[])];
  }
  if (o.urls !== undefined) {
    if (!isObj(o.urls)) fail('urls', 'must be an object like { websocket, sse, polling, send }');
    const u: Record<string, string> = {};
    for (const [k, v] of Object.entries(o.urls as object)) {
      if (![...TRANSPORTS, 'send'].includes(k)) fail(`urls.${k}`, 'is not a rung; use websocket, sse, polling or send');
      if (v === undefined) continue;
      if (typeof v !== 'string' || !v) fail(`urls.${k}`, 'must be a non-empty string');
      checkUrl(`urls.${k}`, v as string);
      u[k] = v as string;
    }
    out.urls = u;
  }
  if (o.params !== undefined) {
    if (!isObj(o.params)) fail('params', 'must be an object of query parameters');
    const p: [string, string][] = [];
    for (const [k, v] of Object.entries(o.params as object)) {
      if (!['string', 'number', 'boolean'].includes(typeof v)) fail(`params.${k}`, 'must be a string, number or boolean');
      p.push([k, String(v)]);
    }
    out.params = p;
  }
  if (o.since !== undefined && o.since !== null) {
    if (typeof o.since !== 'string' && typeof o.since !== 'number') fail('since', 'must be an event id (string or number)');
    out.since = String(o.since);
  }
  if (o.token !== undefined && typeof o.token !== 'string' && typeof o.token !== 'function')
    fail('token', 'must be a string or a function returning a token (or a promise of one)');
  out.token = o.token !== undefined;
  out.heartbeat = checkNumbers('heartbeat', o.heartbeat, {
    intervalMs: [1000, DAY], timeoutMs: [100, DAY], maxMissed: [1, 1000, true], serverSilenceMs: [1000, DAY],
  });
  const h = out.heartbeat as Record<string, number> | undefined;
  if (h && (h.timeoutMs ?? 5000) >= (h.intervalMs ?? 30000))
    fail('heartbeat.timeoutMs', `must be less than heartbeat.intervalMs (${h.intervalMs ?? 30000} ms)`);
  out.backoff = checkNumbers('backoff', o.backoff, {
    initialMs: [1, DAY], maxMs: [1, DAY], multiplier: [1, 100], jitter: [0, 1],
  });
  const b = out.backoff as Record<string, number> | undefined;
  if (b && b.initialMs !== undefined && b.maxMs !== undefined && b.maxMs < b.initialMs)
    fail('backoff.maxMs', 'must be at least backoff.initialMs');
  if (o.polling !== undefined) {
    if (!isObj(o.polling)) fail('polling', 'must be an object');
    const { pauseWhenHidden, ...rest } = o.polling as Record<string, unknown>;
    if (pauseWhenHidden !== undefined && typeof pauseWhenHidden !== 'boolean') fail('polling.pauseWhenHidden', 'must be a boolean');
    out.polling = { ...checkNumbers('polling', rest, { waitMs: [0, 120_000], intervalMs: [0, DAY] }), pauseWhenHidden };
  }
  out.timeouts = checkNumbers('timeouts', o.timeouts, {
    openMs: [0, DAY], raceMs: [0, DAY], firstFrameMs: [0, DAY], sseFirstBytesMs: [0, DAY],
  });
  // `false` turns the feature off; an object tunes it.
  for (const [k, fields] of [
    ['probe', { initialMs: [1000, DAY], maxMs: [1000, 30 * DAY] }],
    ['remember', { ttlMs: [1, 365 * DAY] }],
  ] as const) {
    const v = o[k];
    if (v === undefined || typeof v === 'boolean') out[k] = v;
    else out[k] = checkNumbers(k, v, fields as unknown as Record<string, [number, number]>);
  }
  const es = o.eventSource;
  if (es !== undefined && typeof es !== 'boolean' && !(Array.isArray(es) && es.every((x) => typeof x === 'string')))
    fail('eventSource', 'must be true, false, or the list of event types to listen for');
  out.eventSource = es;
  out.maxFrameBytes = num('maxFrameBytes', o.maxFrameBytes, [64, 2 ** 30, true]);
  out.outboxLimit = num('outboxLimit', o.outboxLimit, [1, 1e6, true]);
  out.maxAttempts = num('maxAttempts', o.maxAttempts, [1, 1e9, true]);
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
  const boot = (a: WasmApi) => {
    wasmApi = a;
    if (closed) return;
    id = nextId++;
    const opts = snap.cursor ? { ...normalized, since: snap.cursor } : normalized;
    try {
      inner = new a.WasmClient(id, opts, onBatch);
    } catch (e) {
      const err = toError(e);
      closed = true;
      setSnap(Object.freeze({ ...snap, status: 'closed', lastError: err }));
      dispatch('error', err);
      return;
    }
    live.set(id, recover);
    try {
      inner.start();
    } catch {
      checkTrap(a); // schedules the recovery
      return;
    }
    for (const [d, res, rej] of queued.splice(0)) sendNow(d, res, rej);
  };

  // A trap in the wasm module: report it as a typed error and start a fresh engine from
  // the last cursor (the broken one is abandoned; its callbacks see a poisoned state and
  // do nothing). Repeated traps close the client rather than loop.
  function recover(message: string) {
    live.delete(id);
    inner = null;
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
        if (closed) reject(new HoldfastError('closed', 'client.send() after client.close(): create a new client'));
        else if (inner) sendNow(data, resolve, reject);
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
