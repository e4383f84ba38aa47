/**
 * The state that the app's routes share: the dependencies passed to `createApp` and the per-request
 * context (request id, logger, principal) kept in `res.locals`.
 * @module
 */
import type { Response } from 'express';
import type { Logger } from 'pino';
import type { AdapterStore } from '../adapters/store.js';
import type { ModelConfig } from '../model/config.js';
import type { BaseModelFingerprint } from '../model/fingerprint.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import type { InferenceBackend } from '../runtime/backend.js';
import type { ApiKeyTable, Principal } from './auth.js';
import { HttpError } from './errors.js';
import type { ServerMetrics } from './metrics.js';

/** The base model as the routes see it. */
export interface ServedModel {
  /** Id clients pass as `model` to use the base model, such as `openai-community/gpt2`. */
  readonly id: string;
  readonly config: ModelConfig;
  readonly fingerprint: BaseModelFingerprint;
  /** Tokenizer used on the main thread to encode prompts and decode generated tokens. */
  readonly tokenizer: TextTokenizer;
  /** Unix time in seconds when the model was loaded, reported as `created` by `GET /v1/models`. */
  readonly createdAt: number;
}

/** Mutable server state that the serve command changes during shutdown. */
export interface ServerLifecycle {
  /** Set when shutdown began: `/readyz` and new completions get 503, and every response closes its connection. */
  draining: boolean;
}

/** Size limits of request bodies in bytes. */
export interface BodyLimits {
  /** Limit of JSON bodies; default 1 MiB. */
  readonly maxJsonBytes: number;
  /** Limit of the whole multipart body of a module upload, and so of each file in it; default 512 MiB. */
  readonly maxUploadBytes: number;
}

/** Everything `createApp` needs. The app does not own these: closing them is the caller's job. */
export interface AppDeps {
  readonly backend: InferenceBackend;
  readonly model: ServedModel;
  readonly store: AdapterStore;
  /** Key table, or null for single-tenant mode (every request is tenant `default` with role `admin`). */
  readonly apiKeys: ApiKeyTable | null;
  readonly metrics: ServerMetrics;
  readonly logger: Logger;
  /** Defaults: 1 MiB for JSON, 512 MiB for uploads. */
  readonly limits?: Partial<BodyLimits>;
  /** Defaults to a state that is never draining. */
  readonly lifecycle?: ServerLifecycle;
}

/** Per-request values in `res.locals`. */
export interface RequestContext {
  readonly requestId: string;
  readonly log: Logger;
  /** Set by the auth middleware on `/v1` routes. */
  principal?: Principal;
}

export function contextOf(res: Response): RequestContext {
  return res.locals as RequestContext;
}

/** Returns the authenticated caller; throws when a route runs without the auth middleware (a programming error). */
export function principalOf(res: Response): Principal {
  const principal = contextOf(res).principal;
  if (principal === undefined) throw new HttpError(500, 'internal error: route reached without authentication');
  return principal;
}
