// A minimal Chrome DevTools Protocol client: launches headless Chromium with
// `--remote-debugging-port=0`, talks to it over one WebSocket (the `ws` package) with flat
// sessions, and opens pages in their own browser contexts.
//
// Contract: nothing here instruments the network (no Network.enable unless a case asks for
// it), so WebSocket/SSE throughput in the page is the browser's own. Every wait is bounded;
// `close()` kills the browser process and removes its profile directory.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';

/// Flags for a machine that may have no route to Google's services (no background
/// networking, component updates or sync; no sandbox when run as root in a container) plus
/// those that keep timers unthrottled.
const FLAGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-extensions',
  '--disable-default-apps',
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
  '--mute-audio',
];

export async function launchChromium(executable = process.env.CHROMIUM ?? '/usr/bin/chromium') {
  const profile = mkdtempSync(join(tmpdir(), 'holdfast-bench-chromium-'));
  const child = spawn(executable, [...FLAGS, '--remote-debugging-port=0', `--user-data-dir=${profile}`, 'about:blank'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const wsUrl = await new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`${executable} printed no DevTools URL within 30 s:\n${buf}`)), 30_000);
    child.once('exit', (code) => reject(new Error(`${executable} exited with ${code}:\n${buf}`)));
    child.stderr.on('data', (d) => {
      buf += d;
      const m = buf.match(/DevTools listening on (ws:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
  child.stderr.resume();
  const conn = await Connection.open(wsUrl);
  const { product } = await conn.send('Browser.getVersion');
  return {
    conn,
    version: product,
    async close() {
      try {
        await conn.send('Browser.close', {}, { timeoutMs: 3000 });
      } catch {}
      conn.close();
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        const t = setTimeout(() => child.kill('SIGKILL'), 3000);
        child.kill('SIGTERM');
        await exited;
        clearTimeout(t);
      }
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

class Connection {
  static open(url) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 512 * 1024 * 1024 });
      ws.once('open', () => resolve(new Connection(ws)));
      ws.once('error', reject);
    });
  }

  constructor(ws) {
    this.ws = ws;
    this.nextId = 1;
    this.pending = new Map();
    this.listeners = new Set();
    ws.on('message', (raw) => {
      const msg = JSON.parse(raw.toString());
      if (msg.id !== undefined) {
        const p = this.pending.get(msg.id);
        if (!p) return;
        this.pending.delete(msg.id);
        clearTimeout(p.timer);
        if (msg.error) p.reject(new Error(`${p.method}: ${msg.error.message}${msg.error.data ? ` (${msg.error.data})` : ''}`));
        else p.resolve(msg.result);
      } else {
        for (const fn of this.listeners) fn(msg);
      }
    });
    ws.on('close', () => {
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error(`${p.method}: the DevTools connection closed`));
      }
      this.pending.clear();
    });
  }

  /// Sends one command (to a page session when `sessionId` is given); rejects on a protocol
  /// error or after `timeoutMs`.
  send(method, params = {}, { sessionId, timeoutMs = 30_000 } = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, method });
      this.ws.send(JSON.stringify(sessionId ? { id, method, params, sessionId } : { id, method, params }));
    });
  }

  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  close() {
    this.ws.close();
  }
}

/// Opens `url` in a fresh browser context (no shared cache, storage or renderer process with
/// other runs) and waits until `window.bench` exists. Returns a page handle.
export async function openPage(browser, url, { timeoutMs = 20_000 } = {}) {
  const { conn } = browser;
  const { browserContextId } = await conn.send('Target.createBrowserContext', { disposeOnDetach: true });
  const { targetId } = await conn.send('Target.createTarget', { url: 'about:blank', browserContextId });
  const { sessionId } = await conn.send('Target.attachToTarget', { targetId, flatten: true });
  const problems = [];
  const off = conn.on((msg) => {
    if (msg.sessionId !== sessionId) return;
    if (msg.method === 'Runtime.exceptionThrown') {
      const d = msg.params.exceptionDetails;
      problems.push(d.exception?.description ?? d.text);
    } else if (msg.method === 'Runtime.consoleAPICalled' && msg.params.type === 'error') {
      problems.push(msg.params.args.map((a) => a.value ?? a.description ?? '').join(' '));
    }
  });
  const page = {
    sessionId,
    problems,
    send: (method, params = {}, opts = {}) => conn.send(method, params, { ...opts, sessionId }),
    /// Evaluates an expression (awaiting a promise) and returns its JSON value.
    async eval(expression, { timeoutMs = 60_000 } = {}) {
      const r = await conn.send(
        'Runtime.evaluate',
        { expression, awaitPromise: true, returnByValue: true, timeout: timeoutMs },
        { sessionId, timeoutMs: timeoutMs + 5_000 },
      );
      if (r.exceptionDetails) {
        const d = r.exceptionDetails;
        throw new Error((d.exception?.description ?? d.text ?? 'exception').split('\n')[0]);
      }
      return r.result.value;
    },
    async close() {
      off();
      try {
        await conn.send('Target.closeTarget', { targetId }, { timeoutMs: 5_000 });
      } catch {}
      try {
        await conn.send('Target.disposeBrowserContext', { browserContextId }, { timeoutMs: 5_000 });
      } catch {}
    },
  };
  try {
    if (process.env.BENCH_VERBOSE) await page.send('Runtime.enable');
    await page.send('Page.navigate', { url });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const ready = await page.eval('typeof window.bench === "object" && document.readyState === "complete"').catch(() => false);
      if (ready) break;
      if (Date.now() > deadline) throw new Error(`the bench page did not load within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (e) {
    await page.close();
    throw e;
  }
  return page;
}
