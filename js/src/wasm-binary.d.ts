// esbuild's `binary` loader turns the .wasm into a Uint8Array (script-tag build only).
declare module '*.wasm' {
  const bytes: Uint8Array;
  export default bytes;
}
