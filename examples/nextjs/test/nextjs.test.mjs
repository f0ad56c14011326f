// The Next.js example end to end: install the freshly built package, `next build` (Turbopack
// and webpack), `next start`, then check that the page renders on the server without error
// (the `connecting` state) and, in Chromium, goes live with the demo deployment's events.
// Needs HOLDFAST_SERVER_BIN and HOLDFAST_PACKAGE_DIR (as tests/e2e). Run:
//   (cd examples/nextjs && npm ci) && node --test examples/nextjs/test/

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchBrowser, openPage, startServer, waitInPage } from '../../../tests/e2e/harness.mjs';

const app = join(dirname(fileURLToPath(import.meta.url)), '..');
const next = join(app, 'node_modules/.bin/next');
const env = { ...process.env, NEXT_TELEMETRY_DISABLED: '1' };
let server, browser;

const freePort = () =>
  new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

before(async () => {
  // The package as users get it: packed, then installed (not linked).
  const packDir = mkdtempSync(join(tmpdir(), 'holdfast-pack-'));
  execFileSync('npm', ['pack', process.env.HOLDFAST_PACKAGE_DIR, '--pack-destination', packDir, '--silent'], { env });
  const tgz = join(packDir, readdirSync(packDir).find((f) => f.endsWith('.tgz')));
  execFileSync('npm', ['install', '--no-save', '--no-audit', '--no-fund', tgz], { cwd: app, env, stdio: 'inherit' });
  rmSync(packDir, { recursive: true, force: true });
  server = await startServer(['--demo', '--demo-interval-ms', '50']);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

for (const bundler of ['turbopack', 'webpack']) {
  test(`with ${bundler}: next build, then the page renders on the server and goes live in the browser`, async () => {
    const distDir = `.next-${bundler}`;
    const buildEnv = { ...env, NEXT_DIST_DIR: distDir };
    execFileSync(next, ['build', `--${bundler}`], { cwd: app, env: buildEnv, stdio: 'inherit', timeout: 300_000 });

    const port = await freePort();
    const child = spawn(next, ['start', '-p', String(port), '-H', '127.0.0.1'], {
      cwd: app,
      env: { ...buildEnv, HOLDFAST_URL: `${server.url}/realtime` },
      stdio: ['ignore', 'pipe', 'inherit'],
      detached: true,
    });
    try {
      const base = `http://127.0.0.1:${port}`;
      let html;
      for (let i = 0; i < 200 && html === undefined; i++) {
        try {
          const res = await fetch(base);
          assert.equal(res.status, 200, 'server rendering succeeded');
          html = await res.text();
        } catch (e) {
          if (e instanceof assert.AssertionError) throw e;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      assert.ok(html, 'next start answered');
      assert.match(html, /data-status="connecting"/, 'the server renders the connecting state');

      const { page, problems } = await openPage(browser, base);
      await waitInPage(page, () => document.getElementById('status')?.dataset.status === 'open', null, {
        what: 'the hook to open',
      });
      await waitInPage(page, () => /deploy-\d+: /.test(document.getElementById('deployment').textContent), null, {
        what: 'a live deployment status',
      });
      const before = await page.evaluate(() => document.getElementById('log').textContent.length);
      await waitInPage(page, (n) => document.getElementById('log').textContent.length !== n, before, {
        what: 'more log lines',
      });
      assert.deepEqual(problems, []);
      await page.close();
    } finally {
      process.kill(-child.pid, 'SIGTERM');
    }
  });
}
