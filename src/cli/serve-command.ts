/**
 * `inducer serve`: the multi-tenant HTTP server. Loads the model in the engine worker, opens the
 * module store and listens until SIGTERM or SIGINT, then drains.
 * @module
 */
import type { Server } from 'node:http';
import path from 'node:path';
import type { Command } from 'commander';
import { pino, type Logger } from 'pino';
import { AdapterStore } from '../adapters/store.js';
import { ensureModel, HubError } from '../model/hub.js';
import { loadTokenizer } from '../model/tokenizer.js';
import { createWorkerBackend } from '../runtime/worker-backend.js';
import { createApp, type ServerLifecycle } from '../server/app.js';
import { loadApiKeys } from '../server/auth.js';
import { CONFIG_ENV_VARS, DEFAULT_MODEL_REPO, resolveServerConfig, type ConfigKey, type ServerConfig } from '../server/config.js';
import { createMetrics } from '../server/metrics.js';
import { drainServer } from '../server/shutdown.js';

const ENV_HELP = Object.entries(CONFIG_ENV_VARS)
  .map(([key, variable]) => `  --${key.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)}`.padEnd(26) + variable)
  .join('\n');

const HELP_AFTER = `
Every option can also be set by an environment variable; the option wins:
${ENV_HELP}

API keys: --api-keys names a JSON file of SHA-256 hashes, for example
  [{ "key_sha256": "<hash>", "tenant": "acme", "role": "user" }]
Make a key and its hash with:
  KEY=$(openssl rand -hex 32); printf %s "$KEY" | sha256sum
Without --api-keys the server runs single-tenant (tenant "default") and binds only to loopback.`;

export function registerServeCommands(program: Command): void {
  program
    .command('serve')
    .description('serve the model and its modules over an OpenAI-compatible HTTP API')
    .option('--model <dir>', `Hugging Face model folder; default: download ${DEFAULT_MODEL_REPO} into --models-dir on first start`)
    .option('--model-id <id>', 'id clients pass as "model" for the base model (default: the repository id or the folder name)')
    .option('--models-dir <dir>', 'folder for downloaded models (default models)')
    .option('--host <host>', 'address to bind (default 127.0.0.1; other addresses require --api-keys)')
    .option('--port <port>', 'TCP port; 0 picks a free one (default 8000)')
    .option('--store <dir>', 'module store folder (default adapters-store)')
    .option('--cache-bytes <n>', 'memory budget of the module cache in bytes (default 268435456)')
    .option('--max-batch-size <n>', 'maximum sequences in one engine step (default 8)')
    .option('--max-queue <n>', 'maximum waiting sequences; more are answered with 429 (default 256)')
    .option('--max-batch-tokens <n>', 'token budget of one prefill step (default 2048)')
    .option('--slot-capacity <n>', 'maximum distinct modules in one step (default: the backend default)')
    .option('--intra-op-threads <n>', 'ONNX Runtime intra-op threads (default: ONNX Runtime chooses)')
    .option('--api-keys <file>', 'JSON file of hashed API keys with tenants and roles')
    .option('--max-json-bytes <n>', 'size limit of JSON request bodies in bytes (default 1048576)')
    .option('--max-upload-bytes <n>', 'size limit of a module upload (both files and the multipart framing) in bytes (default 536870912)')
    .option('--shutdown-timeout-ms <ms>', 'time running requests get to finish after SIGTERM (default 30000)')
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent (default info)')
    .addHelpText('after', HELP_AFTER)
    .action(async (flags: Partial<Record<ConfigKey, string>>) => {
      await runServer(resolveServerConfig(flags));
    });
}

async function resolveModelDir(config: ServerConfig, log: Logger): Promise<{ dir: string; id: string }> {
  if (config.model !== undefined) return { dir: config.model, id: config.modelId ?? path.basename(path.resolve(config.model)) };
  log.info({ repo: DEFAULT_MODEL_REPO, modelsDir: config.modelsDir }, 'no --model given; using the default model, downloading it if needed');
  try {
    const dir = await ensureModel(DEFAULT_MODEL_REPO, {
      modelsDir: config.modelsDir,
      onProgress: (event) => {
        if (event.type === 'retry') log.warn({ repo: DEFAULT_MODEL_REPO, delayMs: event.delayMs, err: event.error.message }, 'download failed; retrying');
      },
    });
    return { dir, id: config.modelId ?? DEFAULT_MODEL_REPO };
  } catch (cause) {
    if (!(cause instanceof HubError)) throw cause;
    throw new Error(`no --model given and the download of ${DEFAULT_MODEL_REPO} failed: ${cause.message}; pass --model DIR with a local model folder`, {
      cause,
    });
  }
}

/** Runs the server until SIGTERM or SIGINT and returns after the shutdown finished. */
export async function runServer(config: ServerConfig): Promise<void> {
  const logger = pino({ level: config.logLevel });
  const apiKeys = config.apiKeys === undefined ? null : await loadApiKeys(config.apiKeys);
  if (apiKeys === null) {
    logger.warn({ host: config.host }, 'no --api-keys given: single-tenant mode, every request is tenant "default" with or without a key; bound to loopback only');
  } else {
    logger.info({ numKeys: apiKeys.size, file: config.apiKeys }, 'API keys loaded');
  }

  const { dir: modelDir, id: modelId } = await resolveModelDir(config, logger);
  const metrics = createMetrics();
  const backend = await createWorkerBackend(
    {
      modelDir,
      maxBatchSize: config.maxBatchSize,
      maxQueue: config.maxQueue,
      maxBatchTokens: config.maxBatchTokens,
      cacheBytes: config.cacheBytes,
      ...(config.slotCapacity === undefined ? {} : { slotCapacity: config.slotCapacity }),
      ...(config.intraOpThreads === undefined ? {} : { intraOpThreads: config.intraOpThreads }),
    },
    {
      ...metrics.observer,
      onEngineStatus(event) {
        const level = event.kind === 'restarted' ? 'info' : 'error';
        logger[level]({ kind: event.kind, attempt: event.attempt }, `engine worker ${event.kind}: ${event.message}`);
      },
    },
  );
  const model = backend.model;
  metrics.modelLoadSeconds.set(model.loadSeconds);
  metrics.modelParameters.set(model.parameterCount);
  logger.info(
    { model: modelId, dir: model.dir, numParameters: model.parameterCount, loadSeconds: Number(model.loadSeconds.toFixed(3)) },
    'model loaded',
  );

  const tokenizer = await loadTokenizer(model.dir, model.config);
  const store = new AdapterStore({
    root: config.store,
    model: model.config,
    fingerprint: model.fingerprint,
    onRetire: (key) => backend.evictModule(key),
  });
  await store.init();

  const lifecycle: ServerLifecycle = { draining: false };
  const app = createApp({
    backend,
    model: { id: modelId, config: model.config, fingerprint: model.fingerprint, tokenizer, createdAt: Math.floor(Date.now() / 1000) },
    store,
    apiKeys,
    metrics,
    logger,
    limits: { maxJsonBytes: config.maxJsonBytes, maxUploadBytes: config.maxUploadBytes },
    lifecycle,
  });

  const server: Server = await new Promise((resolve, reject) => {
    const listening = app.listen(config.port, config.host, (error?: Error) => {
      if (error) reject(new Error(`failed to listen on ${config.host}:${config.port}: ${error.message}; choose another --port or --host`, { cause: error }));
      else resolve(listening);
    });
  });
  const address = server.address();
  logger.info({ address, store: store.root, model: modelId }, 'server listening');

  await new Promise<void>((resolve) => {
    let shuttingDown = false;
    const shutdown = (signal: NodeJS.Signals): void => {
      if (shuttingDown) return;
      shuttingDown = true;
      logger.info({ signal, deadlineMs: config.shutdownTimeoutMs }, 'shutting down');
      void drainServer({ server, backend, lifecycle, timeoutMs: config.shutdownTimeoutMs, logger })
        .catch((error: unknown) => logger.error({ err: error }, 'shutdown failed'))
        .finally(resolve);
    };
    process.once('SIGTERM', shutdown);
    process.once('SIGINT', shutdown);
  });
}
