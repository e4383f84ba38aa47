/**
 * Probes and metrics, which need no API key: `GET /healthz` (the process answers), `GET /readyz`
 * (the backend accepts work and no shutdown is under way) and `GET /metrics` (Prometheus text).
 * @module
 */
import type { Express, Request, Response } from 'express';
import type { AppDeps } from '../context.js';

export function registerHealthRoutes(app: Express, deps: AppDeps): void {
  app.get('/healthz', (_req: Request, res: Response) => {
    res.json({ status: 'ok' });
  });

  app.get('/readyz', (_req: Request, res: Response) => {
    const stats = deps.backend.stats();
    const draining = deps.lifecycle?.draining ?? false;
    const ready = stats.ready && !draining;
    res.status(ready ? 200 : 503).json({
      status: ready ? 'ready' : draining ? 'draining' : 'not_ready',
      waiting_jobs: stats.waitingJobs,
      running_jobs: stats.runningJobs,
    });
  });

  app.get('/metrics', async (_req: Request, res: Response) => {
    deps.metrics.queueDepth.set(deps.backend.stats().waitingJobs);
    res.setHeader('Content-Type', deps.metrics.registry.contentType);
    res.send(await deps.metrics.registry.metrics());
  });
}
