// The public TypeScript surface of Holdfast. Names here are the contract (README, issue 4).

/** A rung of the transport ladder. */
export type TransportName = 'websocket' | 'sse' | 'polling';

/** Connection status as an app renders it. */
export type Status = 'connecting' | 'open' | 'reconnecting' | 'offline' | 'closed';

/** What the client looks like right now. The same object is returned until something changes. */
export interface Snapshot {
  readonly status: Status;
  /** The rung delivering events now, or null while none is. */
  readonly transport: TransportName | null;
  /** Id of the last event delivered (the resume cursor). */
  readonly cursor: string | null;
  /** Failed attempts since the last healthy connection. */
  readonly attempt: number;
  /** When the next attempt starts (ms since the epoch), while waiting. */
  readonly nextRetryAt: number | null;
  /** Upstream messages not yet acknowledged. */
  readonly outboxLength: number;
  /** The most recent error, if any. */
  readonly lastError: HoldfastError | null;
  /** Current client ping interval (shortened below an observed proxy idle cut-off). */
  readonly pingIntervalMs: number;
}

/** One server event, delivered exactly once and in order. */
export interface Message<T = unknown> {
  readonly id: string | null;
  readonly type: string;
  readonly data: T;
}

/** The server could not resume from the cursor: events were lost; reload your state. */
export interface GapInfo {
  readonly reason: string;
  readonly cursor: string | null;
  readonly oldest: string | null;
}

/** One connection attempt, as recorded by `client.diagnostics()`. Never contains a token. */
export interface Attempt {
  readonly transport: TransportName;
  /** A background probe of a higher rung (not the connection in use). */
  readonly probe: boolean;
  /** The URL tried, without the token. */
  readonly url: string;
  /** Date.now() values; null when it did not happen (yet). */
  readonly startedAt: number;
  readonly openedAt: number | null;
  readonly firstDataAt: number | null;
  readonly endedAt: number | null;
  /** Why it failed or ended, or null (running, or closed by the client). */
  readonly failure: HoldfastError | null;
}

/** A decision worth explaining: fell back, moved up, shortened the ping interval, slept… */
export interface Note {
  readonly at: number;
  readonly text: string;
}

export interface Diagnostics {
  readonly snapshot: Snapshot;
  /** The most recent attempts, oldest first (bounded). */
  readonly attempts: readonly Attempt[];
  readonly notes: readonly Note[];
}

/** Wire names, for a backend that already exists and uses its own (PROTOCOL.md §10). Every
 *  field is a non-empty string; leave a field out for its default. */
export interface InteropOptions {
  /** Event field holding the event id. Default `'id'`. */
  idField?: string;
  /** Event field holding the event type. Default `'type'` (e.g. `'event'`). */
  typeField?: string;
  /** Event field holding the payload. Default `'data'` (e.g. `'payload'`); an event
   *  without it is delivered whole as `data`. */
  dataField?: string;
  /** Field of a poll response object holding the events (`{"events": [...]}`). Default
   *  `'events'`. A bare JSON array is understood whatever this says. */
  eventsField?: string;
  /** Query parameter carrying the resume cursor. Default `'since'` (e.g. `'cursor'`). */
  sinceParam?: string;
  /** Query parameter carrying `topic`. Default `'topic'` (e.g. `'deploymentId'`). */
  topicParam?: string;
  /** Query parameter carrying the token on WebSocket (browsers cannot send headers
   *  there). Default `'token'` (e.g. `'access_token'`). */
  tokenParam?: string;
  /** Query parameter asking a long-poll server to hold the request. Default `'wait'`. */
  waitParam?: string;
  /** Query parameter asking an SSE server for more frequent heartbeats (sent only after
   *  a proxy was seen cutting idle streams). Default `'heartbeat'`. */
  heartbeatParam?: string;
  /** Text of a client ping frame. Default `'{"type":"ping"}'`; `'ping'` for servers that
   *  answer the plain text `ping`. */
  pingText?: string;
  /** `type` of the server's answer to a ping (a plain-text frame equal to it counts too).
   *  Default `'pong'`. */
  pongType?: string;
  /** `type` of a server heartbeat frame (never delivered as a message). Default
   *  `'heartbeat'`. */
  heartbeatType?: string;
}

/** Options for `createClient`. `url` is required unless `urls` gives every rung.
 *  Anything invalid makes `createClient` throw a `HoldfastError` with code
 *  `invalid_option` whose message starts with `options.<name>` and says what is allowed. */
export interface ClientOptions {
  /** Base URL or path of the realtime endpoints (`/realtime`): `{url}/ws`, `/sse`, `/poll`,
   *  `/send`. May be left out only when `urls` gives every rung in `transports` (and
   *  `urls.send` when they include SSE or polling). */
  url?: string;
  /** The topic to follow, sent on every request as `?topic=` (or as
   *  `interop.topicParam`). Default: none (the server's default topic). */
  topic?: string;
  /** The ladder, in order. Default `['websocket', 'sse', 'polling']`. */
  transports?: TransportName[];
  /** Per-rung URL overrides (complete endpoint URLs or paths), used as given. */
  urls?: { websocket?: string; sse?: string; polling?: string; send?: string };
  /** Extra query parameters on every request (e.g. `{ tenant: 'acme' }`). Not the ones the
   *  client sets itself (`since`, `token`, `wait`, `heartbeat`, or the topic when `topic`
   *  is given): rename those with `interop`. */
  params?: Record<string, string | number | boolean>;
  /** Starting cursor: only events after this id are delivered. */
  since?: string | number;
  /** A token, or a (possibly async) function called on every (re)connect. */
  token?: string | (() => string | Promise<string>);
  /** WebSocket: the client pings after `intervalMs` (≥ 1000) of silence and waits
   *  `timeoutMs` (≥ 100) for any frame; `maxMissed` unanswered pings in a row reconnect.
   *  Any positive pair works, `timeoutMs` above `intervalMs` included (SignalR-style
   *  servers): an unanswered ping is repeated only when its timeout passes. SSE/polling:
   *  no bytes for `serverSilenceMs` reconnects. */
  heartbeat?: { intervalMs?: number; timeoutMs?: number; maxMissed?: number; serverSilenceMs?: number };
  /** Retry delays: attempt n waits a random time in `[cap × (1 − jitter), cap]`,
   *  `cap = min(maxMs, initialMs × multiplier^n)`; `maxMs` ≥ `initialMs`. */
  backoff?: { initialMs?: number; maxMs?: number; multiplier?: number; jitter?: number };
  /** Polling rung: long-poll wait the server may hold (ms; 0 for short-poll servers, then
   *  no `wait=` is sent), the least time between the starts of two empty polls (≥ 1 ms),
   *  and whether to stop polling while the page is hidden. */
  polling?: { waitMs?: number; intervalMs?: number; pauseWhenHidden?: boolean };
  /** Deadlines of a connection attempt (ms; 0 disables): not open after `openMs`; start the
   *  next rung in parallel after `raceMs`. An open WebSocket (SSE stream) silent for
   *  `firstFrameMs` (`sseFirstBytesMs`) with no hello or pong is cross-checked with a poll
   *  using the same cursor: idle, or blocked (then one rung lower, nothing lost). */
  timeouts?: { openMs?: number; raceMs?: number; firstFrameMs?: number; sseFirstBytesMs?: number };
  /** While on a lower rung, probe the higher ones now and then (`false` to never). */
  probe?: boolean | { initialMs?: number; maxMs?: number };
  /** Use the browser's EventSource for the SSE rung instead of fetch streaming (no
   *  Authorization header: the token goes in the query). EventSource only delivers named
   *  events it listens for: pass the list of your event types. Default false. */
  eventSource?: boolean | string[];
  /** Largest accepted frame/event in bytes. Default 1 MiB. */
  maxFrameBytes?: number;
  /** Upstream messages kept while disconnected. Default 1000. */
  outboxLimit?: number;
  /** Remember the working rung per endpoint in localStorage (default true, 24 h). */
  remember?: boolean | { ttlMs?: number };
  /** Give up after this many failed attempts in a row. Default: never. */
  maxAttempts?: number;
  /** Wire names for an existing backend (field names, query parameters, ping text). */
  interop?: InteropOptions;
}

export type EventMap = {
  message: Message;
  state: Snapshot;
  gap: GapInfo;
  error: HoldfastError;
};

export interface HoldfastClient {
  /** Listen to an event; returns a function that removes the listener. */
  on<K extends keyof EventMap>(type: K, fn: (value: EventMap[K]) => void): () => void;
  /** For `useSyncExternalStore(client.subscribe, client.snapshot)`. */
  subscribe(fn: () => void): () => void;
  snapshot(): Snapshot;
  /** Sends `data` upstream; resolves when the server acknowledged it. */
  send(data: unknown): Promise<void>;
  diagnostics(): Diagnostics;
  /** Closes everything: no timer, listener, socket or request is left behind. */
  close(): void;
}

/** Every `HoldfastError` code. The list is `ErrorCode` in src/engine/error.rs, whose tests
 *  fail when this union differs from it (its last three are the wrapper's own codes, its
 *  `WRAPPER_CODES`). New codes may be added: keep a default branch when switching on one. */
export type ErrorCode =
  | 'upgrade_refused'
  | 'silent_after_open'
  | 'closed_by_peer'
  | 'idle_cutoff'
  | 'sse_buffered'
  | 'unauthorized'
  | 'forbidden'
  | 'token_provider_failed'
  | 'rate_limited'
  | 'offline'
  | 'bad_frame'
  | 'frame_too_large'
  | 'server_reset'
  | 'heartbeat_timeout'
  | 'open_timeout'
  | 'network_error'
  | 'http_error'
  | 'server_error'
  | 'outbox_full'
  | 'send_failed'
  | 'invalid_option'
  | 'invalid_url'
  | 'gave_up'
  | 'closed'
  | 'already_closed'
  | 'internal'
  | 'wasm_load_failed'
  | 'not_connected';

/** Every error Holdfast reports or throws. `code` is stable; `message` says what to do. */
export class HoldfastError extends Error {
  readonly code: ErrorCode;
  readonly transport: TransportName | null;
  constructor(code: ErrorCode, message: string, transport?: TransportName | null) {
    super(message);
    this.name = 'HoldfastError';
    this.code = code;
    this.transport = transport ?? null;
  }
}
