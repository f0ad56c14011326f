// The ESM entry (`import { createClient } from 'holdfast'`). Importing it touches no browser
// global; the wasm module is fetched by the first createClient, from beside this file
// (`new URL(..., import.meta.url)`, which webpack, Turbopack, Vite and esbuild understand).

import init, * as wasm from '../wasm/holdfast_wasm.js';
import { CONNECTING, createClientWith, type WasmApi } from './core.js';
import { makeDiagnose } from './diagnose.js';
import type { ClientOptions, HoldfastClient } from './types.js';

let loading: Promise<WasmApi> | undefined;
const load = (): Promise<WasmApi> =>
  (loading ??= init({ module_or_path: new URL('./holdfast_wasm_bg.wasm', import.meta.url) }).then(
    () => wasm as unknown as WasmApi,
    (e) => {
      loading = undefined; // let a later client try again
      throw e;
    },
  ));

/** Creates a client and starts connecting. Throws a `HoldfastError` (code `invalid_option`)
 *  naming the option when the options are invalid. */
export function createClient(options: ClientOptions): HoldfastClient {
  return createClientWith(load, options);
}

/** Tries every rung once against `url` and prints a plain report to the console. */
export const diagnose = makeDiagnose(createClient);

/** The snapshot a client has before it connects (and what server rendering shows). */
export const initialSnapshot = CONNECTING;

export { HoldfastError } from './types.js';
export type {
  Attempt,
  ClientOptions,
  Diagnostics,
  ErrorCode,
  EventMap,
  GapInfo,
  HoldfastClient,
  InteropOptions,
  Message,
  Note,
  Snapshot,
  Status,
  TransportName,
} from './types.js';
export type { DiagnoseResult } from './diagnose.js';
