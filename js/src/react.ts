// `holdfast/react`: hooks over the client. Safe under StrictMode (the effect creates the
// client and its cleanup closes it, so a double mount leaves one live client) and during
// server rendering (no client is created; the snapshot is the `connecting` constant).

import { useCallback, useEffect, useRef, useState, useSyncExternalStore } from 'react';
import { createClient, HoldfastError, initialSnapshot } from './index.js';
import type { ClientOptions, HoldfastClient, Message, Snapshot, Status, TransportName } from './index.js';

export interface UseHoldfast<T = unknown> {
  status: Status;
  transport: TransportName | null;
  snapshot: Snapshot;
  /** The most recent message, or null. */
  lastMessage: Message<T> | null;
  /** `client.send`, rejecting with code `not_connected` before the client exists. */
  send: (data: unknown) => Promise<void>;
  /** The live client (null during server rendering and the first render). */
  client: HoldfastClient | null;
}

const noSubscribe = () => () => {};
const connecting = () => initialSnapshot;

// Options are compared by value (functions by presence), so an inline object literal in
// render does not reconnect on every render.
const keyOf = (o: ClientOptions | null | undefined) =>
  o ? JSON.stringify(o, (_k, v) => (typeof v === 'function' ? '[fn]' : v)) : '';

/** Connects while mounted; pass `null` to stay disconnected. */
export function useHoldfast<T = unknown>(options: ClientOptions | null | undefined): UseHoldfast<T> {
  const latest = useRef(options);
  latest.current = options;
  const [client, setClient] = useState<HoldfastClient | null>(null);
  const [lastMessage, setLastMessage] = useState<Message<T> | null>(null);
  const key = keyOf(options);

  useEffect(() => {
    const o = latest.current;
    if (!o) return;
    // The token provider is read at call time, so a new function each render is fine.
    const token = typeof o.token === 'function' ? () => (latest.current!.token as () => string | Promise<string>)() : o.token;
    const c = createClient({ ...o, token });
    const off = c.on('message', (m) => setLastMessage(m as Message<T>));
    setClient(c);
    return () => {
      off();
      c.close();
      setClient((cur) => (cur === c ? null : cur));
    };
  }, [key]);

  const snapshot = useSyncExternalStore(
    client ? client.subscribe : noSubscribe,
    client ? client.snapshot : connecting,
    connecting,
  );
  const send = useCallback(
    (data: unknown) =>
      client
        ? client.send(data)
        : Promise.reject(new HoldfastError('not_connected', 'send() before the client was created (it is created after mount)')),
    [client],
  );
  return { status: snapshot.status, transport: snapshot.transport, snapshot, lastMessage, send, client };
}

/** Calls `handler` for each message of `type` (`'*'` for all) from `client` (a client or
 *  the object `useHoldfast` returns). The latest handler is always used. */
export function useHoldfastEvent<T = unknown>(
  client: HoldfastClient | { client: HoldfastClient | null } | null | undefined,
  type: string,
  handler: (data: T, message: Message<T>) => void,
): void {
  const c = client && 'on' in client ? client : (client?.client ?? null);
  const ref = useRef(handler);
  useEffect(() => {
    ref.current = handler;
  });
  useEffect(() => {
    if (!c) return;
    return c.on('message', (m) => {
      if (type === '*' || m.type === type) ref.current(m.data as T, m as Message<T>);
    });
  }, [c, type]);
}

export type { ClientOptions, HoldfastClient, Message, Snapshot } from './index.js';
