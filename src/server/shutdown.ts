/**
 * Graceful shutdown of a listening server: drain first, then close.
 * @module
 */
import type { Server } from 'node:http';
import type { Logger } from 'pino';
import type { InferenceBackend } from '../runtime/backend.js';
import type { ServerLifecycle } from './context.js';

/** Time the last bytes of responses get after the backend stopped, before open connections are closed. */
const FLUSH_MS = 100;

export interface DrainOptions {
  readonly server: Server;
  readonly backend: InferenceBackend;
  /** The state passed to `createApp`; `draining` is set here. */
  readonly lifecycle: ServerLifecycle;
  /** Time running jobs get to finish before the backend cancels them, in milliseconds. */
  readonly timeoutMs: number;
  readonly logger: Logger;
}

/**
 * Drains and stops the server. While running jobs finish (at most `timeoutMs`), the server keeps
 * accepting connections, responds to `/readyz` and new completions with 503 and closes the
 * connection after every response. Jobs still running at the deadline are cancelled, and their
 * requests end with a 503 error. Then the server stops listening and closes the remaining
 * connections.
 */
export async function drainServer(options: DrainOptions): Promise<void> {
  const { server, backend, lifecycle, logger } = options;
  lifecycle.draining = true;
  const stats = backend.stats();
  logger.info(
    { deadlineMs: options.timeoutMs, runningJobs: stats.runningJobs, waitingJobs: stats.waitingJobs },
    'draining: answering 503 to new completions while running jobs finish',
  );
  try {
    await backend.shutdown(options.timeoutMs);
  } catch (error) {
    logger.error({ err: error }, 'backend shutdown failed; closing the server anyway');
  }

  // The responses of cancelled jobs are written as the backend ends them; give their last bytes a moment.
  await new Promise((resolve) => setTimeout(resolve, FLUSH_MS));
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  // Whatever is still open is a response that will not finish, such as a stalled upload.
  server.closeAllConnections();
  await closed;
  logger.info('server stopped');
}
