/**
 * Configuration of `inducer serve`: command-line flags over environment variables over
 * defaults, validated with zod at start-up. Every flag `--some-flag` has the variable
 * `INDUCER_SOME_FLAG`.
 * @module
 */
import { z } from 'zod';
import { DEFAULT_MAX_JSON_BYTES, DEFAULT_MAX_UPLOAD_BYTES } from './app.js';

/** Hugging Face repository served when no model folder is given. */
export const DEFAULT_MODEL_REPO = 'openai-community/gpt2';

/** Settings that have a flag and an environment variable, with the variable of each. */
export const CONFIG_ENV_VARS = {
  model: 'INDUCER_MODEL',
  modelId: 'INDUCER_MODEL_ID',
  modelsDir: 'INDUCER_MODELS_DIR',
  host: 'INDUCER_HOST',
  port: 'INDUCER_PORT',
  store: 'INDUCER_STORE',
  cacheBytes: 'INDUCER_CACHE_BYTES',
  maxBatchSize: 'INDUCER_MAX_BATCH_SIZE',
  maxQueue: 'INDUCER_MAX_QUEUE',
  maxBatchTokens: 'INDUCER_MAX_BATCH_TOKENS',
  slotCapacity: 'INDUCER_SLOT_CAPACITY',
  intraOpThreads: 'INDUCER_INTRA_OP_THREADS',
  apiKeys: 'INDUCER_API_KEYS',
  maxJsonBytes: 'INDUCER_MAX_JSON_BYTES',
  maxUploadBytes: 'INDUCER_MAX_UPLOAD_BYTES',
  shutdownTimeoutMs: 'INDUCER_SHUTDOWN_TIMEOUT_MS',
  logLevel: 'INDUCER_LOG_LEVEL',
} as const;

export type ConfigKey = keyof typeof CONFIG_ENV_VARS;

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '::1']);

/** A count from a flag (already a number) or an environment variable (a string of digits). */
function count(min: number) {
  return z.coerce.number().int(`expected an integer`).min(min).max(Number.MAX_SAFE_INTEGER);
}

const serverConfigSchema = z
  .strictObject({
    /** Model folder; when missing, the server pulls {@link DEFAULT_MODEL_REPO} into `modelsDir`. */
    model: z.string().min(1).optional(),
    /** Id clients use as `model` for the base model; defaults to the repository id or the folder name. */
    modelId: z.string().min(1).max(256).optional(),
    modelsDir: z.string().min(1).default('models'),
    host: z.string().min(1).default('127.0.0.1'),
    port: count(0).max(65535).default(8000),
    store: z.string().min(1).default('adapters-store'),
    /** Memory budget of the backend's module cache, in bytes; default 256 MiB. */
    cacheBytes: count(1).default(256 * 1024 * 1024),
    maxBatchSize: count(1).default(8),
    maxQueue: count(1).default(256),
    /** Token budget of one engine step (prefill tokens plus decode rows). */
    maxBatchTokens: count(1).default(2048),
    /** Module slots in one batch besides slot 0 (the frozen model); defaults to `maxBatchSize`. */
    slotCapacity: count(1).optional(),
    intraOpThreads: count(1).optional(),
    /** JSON file of hashed API keys; without it the server runs single-tenant on loopback only. */
    apiKeys: z.string().min(1).optional(),
    maxJsonBytes: count(1).default(DEFAULT_MAX_JSON_BYTES),
    maxUploadBytes: count(1).default(DEFAULT_MAX_UPLOAD_BYTES),
    /** Time running jobs get to finish after SIGTERM before they are cancelled. */
    shutdownTimeoutMs: count(0).default(30_000),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .superRefine((config, context) => {
    if (config.apiKeys === undefined && !LOOPBACK_HOSTS.has(config.host)) {
      context.addIssue({
        code: 'custom',
        path: ['host'],
        message: `binding to ${config.host} requires --api-keys, because without a key file anyone who can reach the port could use and replace modules; pass --api-keys FILE or bind 127.0.0.1`,
      });
    }
  });

export type ServerConfig = z.infer<typeof serverConfigSchema>;

/** Error for an invalid setting; the message names the flag, its environment variable and the problem. */
export class ServerConfigError extends Error {
  override readonly name = 'ServerConfigError';
}

function flagOf(key: string): string {
  return `--${key.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)}`;
}

/**
 * Merges flags (values given on the command line; undefined means not given) over environment
 * variables and validates the result. Throws {@link ServerConfigError} listing each invalid setting.
 */
export function resolveServerConfig(flags: Partial<Record<ConfigKey, unknown>>, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const merged: Record<string, unknown> = {};
  for (const [key, variable] of Object.entries(CONFIG_ENV_VARS)) {
    const flag = flags[key as ConfigKey];
    const fromEnv = env[variable];
    if (flag !== undefined) merged[key] = flag;
    else if (fromEnv !== undefined && fromEnv !== '') merged[key] = fromEnv;
  }
  const parsed = serverConfigSchema.safeParse(merged);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const key = String(issue.path[0] ?? '');
      const variable = CONFIG_ENV_VARS[key as ConfigKey];
      const where = variable === undefined ? key : `${flagOf(key)} (${variable})`;
      return `${where}: ${issue.message}`;
    });
    throw new ServerConfigError(`invalid server configuration: ${problems.join('; ')}`);
  }
  return parsed.data;
}
