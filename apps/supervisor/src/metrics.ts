/**
 * Prometheus metrics of the supervisor (prom-client), served on the configured address.
 */
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { HandoffResult, SupervisorStatus } from '@handoff/supervisor';

const SECONDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/** The supervisor's metrics. */
export class Metrics {
  readonly registry = new Registry();
  readonly #handoffs = new Counter({ name: 'handoff_handoffs_total', help: 'Handoffs by outcome (committed, promoted, rolledBack, coldStart, error).', labelNames: ['outcome'], registers: [this.registry] });
  readonly #duration = new Histogram({ name: 'handoff_duration_seconds', help: 'Handoff duration, from start to commit or rollback.', buckets: SECONDS, registers: [this.registry] });
  readonly #phase = new Histogram({ name: 'handoff_phase_duration_seconds', help: 'Time spent in each supervisor phase of a handoff.', labelNames: ['phase'], buckets: SECONDS, registers: [this.registry] });
  readonly #restarts = new Gauge({ name: 'handoff_daemon_restarts', help: 'Restarts of the daemon after an unexpected death, since the supervisor started.', registers: [this.registry] });
  readonly #generation = new Gauge({ name: 'handoff_daemon_generation', help: 'Generation of the serving daemon (1 = first start; +1 per handoff or restart).', registers: [this.registry] });
  readonly #pid = new Gauge({ name: 'handoff_daemon_pid', help: 'Pid of the serving daemon (0 when none).', registers: [this.registry] });
  readonly #up = new Gauge({ name: 'handoff_daemon_up', help: '1 while a daemon serves, 0 otherwise.', registers: [this.registry] });
  readonly #probations = new Counter({ name: 'handoff_probations_total', help: 'Probations of new versions by outcome (passed, reverted, failed).', labelNames: ['outcome'], registers: [this.registry] });
  readonly #reverts = new Counter({ name: 'handoff_reverts_total', help: 'Returns to the last known good version, by how (handoff: the failing version still served; restart: it died).', labelNames: ['how'], registers: [this.registry] });
  readonly #onProbation = new Gauge({ name: 'handoff_probation_active', help: '1 while the serving version is on probation.', registers: [this.registry] });
  readonly #reloads = new Counter({ name: 'handoff_reloads_total', help: 'Reloads in place (a plugin or the daemon configuration, no handoff) by target and outcome (reloaded, rolledBack, failed, refused, error).', labelNames: ['target', 'outcome'], registers: [this.registry] });
  readonly #good = new Gauge({ name: 'handoff_version_good', help: '1 when the serving version proved good (it served through its probation).', registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'handoff_supervisor_' });
  }

  handoff(result: HandoffResult): void {
    this.#handoffs.inc({ outcome: result.outcome });
    this.#duration.observe(result.timings.totalMs / 1000);
    for (const [phase, ms] of Object.entries(result.timings.phases)) this.#phase.observe({ phase }, ms / 1000);
  }

  probationEnded(outcome: 'passed' | 'reverted' | 'failed'): void {
    this.#probations.inc({ outcome });
  }

  reverted(how: 'handoff' | 'restart'): void {
    this.#reverts.inc({ how });
  }

  /** A reload in place ended (`error`: the daemon did not answer it). */
  reload(target: 'plugin' | 'config', outcome: string): void {
    this.#reloads.inc({ target, outcome });
  }

  handoffError(): void {
    this.#handoffs.inc({ outcome: 'error' });
  }

  status(status: SupervisorStatus): void {
    this.#restarts.set(status.restarts);
    this.#generation.set(status.incumbent?.generation ?? 0);
    this.#pid.set(status.incumbent?.pid ?? 0);
    this.#up.set(status.incumbent ? 1 : 0);
    this.#onProbation.set(status.versions.probation ? 1 : 0);
    this.#good.set(status.versions.good ? 1 : 0);
  }

  /** Serves GET /metrics; `refresh` is called before each scrape. */
  async serve(host: string, port: number, refresh: () => void): Promise<Server> {
    const server = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.statusCode = 404;
        res.end('see /metrics\n');
        return;
      }
      refresh();
      this.registry.metrics().then(
        (text) => {
          res.setHeader('content-type', this.registry.contentType);
          res.end(text);
        },
        (error: unknown) => {
          res.statusCode = 500;
          res.end(String(error));
        },
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        resolve();
      });
    });
    return server;
  }
}
