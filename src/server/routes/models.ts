/**
 * `GET /v1/models`: the base model and the caller's modules, in the OpenAI list shape.
 * @module
 */
import type { Express, Request, Response } from 'express';
import { principalOf, type AppDeps } from '../context.js';

export function registerModelRoutes(app: Express, deps: AppDeps): void {
  app.get('/v1/models', async (_req: Request, res: Response) => {
    const { tenant } = principalOf(res);
    const adapters = await deps.store.list(tenant);
    res.json({
      object: 'list',
      data: [
        { id: deps.model.id, object: 'model', created: deps.model.createdAt, owned_by: 'inducer-serve', kind: 'base' },
        ...adapters.map((adapter) => ({
          id: adapter.name,
          object: 'model',
          created: Math.floor(Date.parse(adapter.storedAt) / 1000),
          owned_by: adapter.tenant,
          kind: 'adapter',
          parent: deps.model.id,
          version: adapter.version,
        })),
      ],
    });
  });
}
