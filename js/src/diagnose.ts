// `Holdfast.diagnose(url)`: tries every rung once, alone, and prints what works, what fails
// and why, with what to change. The per-rung verdicts come from the engine's typed errors,
// whose messages already say what to do; this only runs the rungs and lays out the report.

import type { ClientOptions, ErrorCode, HoldfastClient, HoldfastError, TransportName } from './types.js';

export interface DiagnoseResult {
  readonly transport: TransportName;
  readonly ok: boolean;
  /** Time until events flowed (ms), when ok. */
  readonly ms: number | null;
  /** Error code when not ok (`timeout` when nothing happened in time). */
  readonly code: ErrorCode | 'timeout' | null;
  readonly message: string | null;
}

const RUNGS: TransportName[] = ['websocket', 'sse', 'polling'];

export function makeDiagnose(create: (o: ClientOptions) => HoldfastClient) {
  return async function diagnose(
    url: string | Omit<ClientOptions, 'transports'>,
    { timeoutMs = 10_000, quiet = false }: { timeoutMs?: number; quiet?: boolean } = {},
  ): Promise<DiagnoseResult[]> {
    const base: ClientOptions = typeof url === 'string' ? { url } : { ...url };
    const results: DiagnoseResult[] = [];
    for (const transport of RUNGS) {
      const t0 = Date.now();
      const client = create({ ...base, transports: [transport], remember: false, maxAttempts: 1 });
      const r = await new Promise<DiagnoseResult>((resolve) => {
        const done = (ok: boolean, e?: { code: ErrorCode | 'timeout'; message: string }) =>
          resolve({ transport, ok, ms: ok ? Date.now() - t0 : null, code: e?.code ?? null, message: e?.message ?? null });
        const timer = setTimeout(
          () => done(false, { code: 'timeout', message: `no events flowed within ${timeoutMs} ms` }),
          timeoutMs,
        );
        client.on('state', (s) => {
          if (s.status === 'open') {
            clearTimeout(timer);
            done(true);
          } else if (s.status === 'closed' && s.lastError) {
            clearTimeout(timer);
            done(false, s.lastError as HoldfastError);
          }
        });
        client.on('error', (e) => {
          clearTimeout(timer);
          done(false, e);
        });
      });
      client.close();
      results.push(r);
    }
    if (!quiet) {
      const best = results.find((r) => r.ok);
      const lines = [`Holdfast diagnose ${typeof url === 'string' ? url : url.url}`];
      for (const r of results)
        lines.push(r.ok ? `  ✔ ${r.transport}: works (events flowing after ${r.ms} ms)` : `  ✘ ${r.transport}: ${r.code} — ${r.message}`);
      lines.push(
        best
          ? best.transport === 'websocket'
            ? 'Every client will use WebSocket.'
            : `Clients will fall back to ${best.transport}. Fix the failures above to get ${RUNGS[0]}.`
          : 'No rung works: check the URL, that the server runs, CORS, and the messages above.',
      );
      console.log(lines.join('\n'));
    }
    return results;
  };
}
