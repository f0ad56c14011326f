// The script-tag build: `<script src="holdfast.js">` defines `window.Holdfast` with the same
// API as the ESM entry. The wasm is inlined, so it is compiled synchronously on first use.

import * as wasm from '../wasm/holdfast_wasm.js';
import bytes from '../wasm/holdfast_wasm_bg.wasm';
import { CONNECTING, createClientWith, type WasmApi } from './core.js';
import { makeDiagnose } from './diagnose.js';
import type { ClientOptions, HoldfastClient } from './types.js';

let started = false;
const load = (): WasmApi => {
  if (!started) {
    wasm.initSync({ module: bytes });
    started = true;
  }
  return wasm as unknown as WasmApi;
};

export function createClient(options: ClientOptions): HoldfastClient {
  return createClientWith(load, options);
}
export const diagnose = makeDiagnose(createClient);
export const initialSnapshot = CONNECTING;
export { HoldfastError } from './types.js';
