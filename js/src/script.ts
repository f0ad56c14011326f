// The script-tag build: `<script src="holdfast.js">` defines `window.Holdfast` with the same
// API as the ESM entry. The wasm is inlined gzipped (base64 of gzip is about a third
// smaller on the wire than base64 of the wasm) and inflated by the browser's
// DecompressionStream when the first client is created.

import init, * as wasm from '../wasm/holdfast_wasm.js';
import packed from '../wasm/holdfast_wasm_bg.wasm.gz';
import { CONNECTING, createClientWith, type WasmApi } from './core.js';
import { makeDiagnose } from './diagnose.js';
import type { ClientOptions, HoldfastClient } from './types.js';

let loading: Promise<WasmApi> | undefined;
const load = (): Promise<WasmApi> =>
  (loading ??= (async () => {
    const gz = Uint8Array.from(atob(packed), (c) => c.charCodeAt(0));
    const bytes = await new Response(new Blob([gz]).stream().pipeThrough(new DecompressionStream('gzip'))).arrayBuffer();
    await init({ module_or_path: bytes });
    return wasm as unknown as WasmApi;
  })());

export function createClient(options: ClientOptions): HoldfastClient {
  return createClientWith(load, options);
}
export const diagnose = makeDiagnose(createClient);
export const initialSnapshot = CONNECTING;
export { HoldfastError } from './types.js';
