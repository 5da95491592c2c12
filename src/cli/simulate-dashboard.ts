/**
 * `flotilla simulate --dashboard [port]`: the web dashboard (and /metrics, with the same token) of
 * one simulation, on loopback over plain HTTP, fed by the simulation's hooks. The printed link
 * carries a token made for this run only (a key in memory), so nothing is served to anyone without it.
 */
import { Telemetry, totalRounds } from '../dashboard/telemetry.ts';
import { TokenSigner } from '../dashboard/token.ts';
import { startDashboard } from '../dashboard/web.ts';
import type { WebServer } from '../dashboard/http.ts';
import { RowBuffer } from '../dashboard/row-buffer.ts';
import { SimulationDashboard } from '../simulator/dashboard.ts';
import type { SimulateOptions } from '../simulator/simulator.ts';
import { silentLogger } from '../util/log.ts';
import type { RoundSummary } from '../workflows/workflow.ts';

type Hooks = Required<Pick<SimulateOptions, 'onStart' | 'onRound' | 'onProgress' | 'onTransfer' | 'onMetric' | 'onTracked' | 'signal'>>;

export interface SimulationDashboardServer {
  url: string;
  hooks: Hooks;
  ended(outcome: { rounds: RoundSummary[] } | Error): void;
  close(): Promise<void>;
}

export async function serveSimulationDashboard(jobName: string, workspace: string, port: number): Promise<SimulationDashboardServer> {
  const abort = new AbortController();
  const backend = new SimulationDashboard({
    jobName,
    workspace,
    tokens: TokenSigner.ephemeral(),
    abort: (reason) => abort.abort(new Error(reason)),
  });
  const telemetry = new Telemetry({
    connectedSites: () => backend.sites().filter((s) => s.state === 'connected').length,
    jobStates: () => Object.fromEntries(backend.jobs().map((j) => [j.state, 1])),
  });
  const rows = new RowBuffer();
  const web: WebServer = await startDashboard({ host: '127.0.0.1', port, backend, telemetry, rows, log: silentLogger() });
  let jobId = '';
  return {
    url: `${web.url}/#token=${backend.token()}`,
    hooks: {
      onStart: (i) => {
        jobId = i.jobId;
        backend.started(i.jobId, i.sites);
        telemetry.jobStarted(i.jobId, i.name, totalRounds(i.workflows));
      },
      onRound: (s) => telemetry.roundCompleted(jobId, s),
      onProgress: (p) => telemetry.roundProgress(jobId, p),
      onTransfer: (t) => telemetry.transfer(jobId, t),
      onMetric: (m) => telemetry.metricLogged(jobId, m),
      onTracked: (r) => rows.add(r),
      signal: abort.signal,
    },
    ended: (outcome) => {
      if (outcome instanceof Error)
        backend.ended(abort.signal.aborted ? 'ABORTED' : 'FAILED', outcome.message, telemetry.roundSummaries(jobId));
      else backend.ended('FINISHED', `${outcome.rounds.length} rounds`, outcome.rounds);
      telemetry.jobEnded(jobId);
    },
    close: () => web.close(),
  };
}
