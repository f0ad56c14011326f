// End-to-end harness: the real reference server, the built npm package, headless Chromium.
//
// Contract: everything binds 127.0.0.1 on ports the OS picks; every process a test starts is
// stopped by the returned handle's `stop()` (tests call it in `after`/`finally`), and every
// wait is bounded so a broken build fails instead of hanging.
//
// Environment (set by `cargo xtask test`):
//   HOLDFAST_SERVER_BIN   path of the built holdfast-server
//   HOLDFAST_PACKAGE_DIR  the assembled npm package (package.json, dist/…)

import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

export const PUBLISH_KEY = 'e2e-publish-key';

function requiredEnv(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the end-to-end tests through \`cargo xtask test\``);
  return value;
}

/// A static site for the server to serve: the package under /pkg/ and the given pages.
export function makeSite(pages = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'holdfast-e2e-'));
  cpSync(requiredEnv('HOLDFAST_PACKAGE_DIR'), join(dir, 'pkg'), { recursive: true });
  // Chromium asks for /favicon.ico on the first page; a 404 would read as a page error.
  writeFileSync(join(dir, 'favicon.ico'), '');
  for (const [name, html] of Object.entries(pages)) writeFileSync(join(dir, name), html);
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/// Starts holdfast-server on a free port; resolves once it prints `listening on http://…`.
/// `port` (optional) binds that port instead (a restart on the same address).
export async function startServer(args = [], { port = 0 } = {}) {
  const bin = requiredEnv('HOLDFAST_SERVER_BIN');
  const child = spawn(bin, ['--host', '127.0.0.1', '--port', String(port), '--publish-key', PUBLISH_KEY, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${bin} did not start within 20 s`)), 20_000);
    child.once('exit', (code) => reject(new Error(`${bin} exited early with ${code}`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = line.match(/listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
  return {
    url,
    /// Kills the process at once (a crash: no graceful shutdown).
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/// Publishes events `{type, data}` to a topic through the server's publish endpoint.
export async function publish(serverUrl, topic, events) {
  const res = await fetch(`${serverUrl}/realtime/publish?topic=${encodeURIComponent(topic)}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${PUBLISH_KEY}` },
    body: JSON.stringify(events),
  });
  if (!res.ok) throw new Error(`publish failed: HTTP ${res.status} ${await res.text()}`);
  return res.json();
}

/// Headless Chromium with the flags a machine without internet access needs: without the
/// background-networking ones Chromium keeps trying to reach its update and sync hosts.
export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/// Opens a page and records console errors and uncaught exceptions, so a test can assert
/// that none happened (a wasm panic shows up here).
export async function openPage(browser, url) {
  const page = await browser.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console.error: ${m.text()}`);
  });
  await page.goto(url);
  return { page, problems };
}

/// Polls `predicate` in the page until it returns true, or throws after `timeoutMs`.
export async function waitInPage(page, predicate, arg, { timeoutMs = 30_000, what = 'condition' } = {}) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: timeoutMs, polling: 50 });
  } catch (e) {
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${e.message}`);
  }
}

/// Checks a received sequence against 1..=count: returns counts a test can assert and print.
export function auditSequence(seqs, count) {
  const seen = new Set();
  let duplicates = 0;
  let outOfOrder = 0;
  let previous = 0;
  for (const s of seqs) {
    if (seen.has(s)) duplicates++;
    seen.add(s);
    if (s < previous) outOfOrder++;
    previous = s;
  }
  let missing = 0;
  for (let i = 1; i <= count; i++) if (!seen.has(i)) missing++;
  return { received: seqs.length, duplicates, outOfOrder, missing };
}
