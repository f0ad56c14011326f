// Bundles the wrapper with esbuild and emits .d.ts with tsc (called by xtask/src/package.rs
// after wasm-bindgen wrote js/wasm/). Usage: node js/build.mjs <out-dir>
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { execFileSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const target = resolve(root, process.env.CARGO_TARGET_DIR ?? 'target');
const out = resolve(process.argv[2] ?? join(target, 'npm/holdfast/dist'));
mkdirSync(out, { recursive: true });

const common = {
  bundle: true,
  minify: true,
  target: 'es2020',
  legalComments: 'none',
  logLevel: 'warning',
  absWorkingDir: root,
};

// ESM entry; the wasm is fetched from beside it.
await build({ ...common, format: 'esm', platform: 'neutral', entryPoints: ['js/src/index.ts'], outfile: join(out, 'index.js') });
copyFileSync(join(root, 'js/wasm/holdfast_wasm_bg.wasm'), join(out, 'holdfast_wasm_bg.wasm'));

// React hooks: share the ESM entry (one wasm instance) instead of bundling a second copy.
const shareIndex = {
  name: 'share-index',
  setup(b) {
    b.onResolve({ filter: /^\.\/index\.js$/ }, () => ({ path: './index.js', external: true }));
  },
};
await build({
  ...common,
  format: 'esm',
  platform: 'neutral',
  entryPoints: ['js/src/react.ts'],
  outfile: join(out, 'react.js'),
  external: ['react'],
  plugins: [shareIndex],
});

// Script tag: one file, wasm inlined (gzipped, base64), defines window.Holdfast.
writeFileSync(
  join(root, 'js/wasm/holdfast_wasm_bg.wasm.gz'),
  gzipSync(readFileSync(join(root, 'js/wasm/holdfast_wasm_bg.wasm')), { level: 9 }),
);
await build({
  ...common,
  format: 'iife',
  globalName: 'Holdfast',
  platform: 'browser',
  entryPoints: ['js/src/script.ts'],
  outfile: join(out, 'holdfast.js'),
  loader: { '.gz': 'base64' },
  // The glue's fallback `new URL(..., import.meta.url)` is never reached (init gets bytes).
  define: { 'import.meta.url': '"about:blank"' },
});

// Types: index.d.ts, react.d.ts and what they import.
execFileSync(join(root, 'node_modules/.bin/tsc'), ['-p', join(root, 'js/tsconfig.json'), '--outDir', out], {
  stdio: 'inherit',
});
