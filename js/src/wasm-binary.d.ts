// esbuild's `base64` loader turns the gzipped wasm into a base64 string (script-tag build).
declare module '*.wasm.gz' {
  const base64: string;
  export default base64;
}
