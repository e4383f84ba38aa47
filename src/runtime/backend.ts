/**
 * The contract between the HTTP server (main thread) and the inference backend (the engine and
 * its scheduler, running in a worker thread). The server validates and tokenizes requests, then
 * submits jobs; the backend batches jobs continuously and streams events back.
 * @module
 */
import type { SamplingParams } from './sampler.js';

/** The module a job uses: none (the frozen model), or one stored module version. */
export type JobModule =
  | { readonly kind: 'base' }
  | {
      readonly kind: 'adapter';
      /** Cache key unique per stored version, e.g. `tenant/name@version`. */
      readonly key: string;
      /** Folder with adapter_config.json and adapter_model.safetensors of that version. */
      readonly dir: string;
    };

/** One sequence to generate. A request with `n` > 1 or several prompts becomes several jobs. */
export interface CompletionJob {
  /** Unique id, used in logs and for cancellation. */
  readonly id: string;
  /** Tenant that submitted the job, for fair scheduling. */
  readonly tenant: string;
  readonly module: JobModule;
  /** Prompt token ids, at least one. */
  readonly promptIds: readonly number[];
  readonly sampling: SamplingParams;
  readonly maxNewTokens: number;
  /** Token ids that end the sequence (not emitted). */
  readonly stopTokenIds: readonly number[];
  /** Number of top alternatives to return per generated token (0 for none). */
  readonly topLogprobs: number;
  /** Also return log-probabilities of the prompt tokens (for `echo` with `logprobs`). */
  readonly promptLogprobs: boolean;
}

/** A generated token with its log-probability and optional alternatives. */
export interface TokenEvent {
  readonly type: 'token';
  readonly jobId: string;
  readonly tokenId: number;
  readonly logprob: number;
  readonly topLogprobs?: readonly { readonly tokenId: number; readonly logprob: number }[];
}

/** Sent once after prefill when `promptLogprobs` is set: entry i is log p(prompt[i+1] | prompt[..i]). */
export interface PromptLogprobsEvent {
  readonly type: 'prompt_logprobs';
  readonly jobId: string;
  readonly logprobs: readonly number[];
}

/** The last event of a job. */
export interface DoneEvent {
  readonly type: 'done';
  readonly jobId: string;
  readonly finishReason: 'length' | 'eos' | 'cancelled';
  readonly promptTokens: number;
  readonly completionTokens: number;
}

/** The job failed; no further events follow. `status` is the HTTP status the server should use. */
export interface ErrorEvent {
  readonly type: 'error';
  readonly jobId: string;
  readonly status: number;
  readonly code: string;
  readonly message: string;
  /** Suggested seconds before retrying, when the failure is temporary (the engine is restarting); a server can send it as `Retry-After`. */
  readonly retryAfterSeconds?: number;
}

export type JobEvent = TokenEvent | PromptLogprobsEvent | DoneEvent | ErrorEvent;

/** Backend state and counters, for readiness and metrics. */
export interface BackendStats {
  readonly ready: boolean;
  readonly waitingJobs: number;
  readonly runningJobs: number;
}

/** Inference backend as the server sees it. */
export interface InferenceBackend {
  /**
   * Queues a job. Events arrive through `onEvent` until a `done` or `error` event. Throws
   * {@link QueueFullError} when the waiting queue is full.
   */
  submit(job: CompletionJob, onEvent: (event: JobEvent) => void): void;
  /** Stops a job (for example when its client disconnected); it ends with a `done` event with reason `cancelled`. */
  cancel(jobId: string): void;
  /** Drops every cached copy of a module version, e.g. after it was replaced or deleted. */
  evictModule(key: string): void;
  stats(): BackendStats;
  /** Stops accepting jobs, waits for running jobs up to `deadlineMs`, cancels the rest, and releases the engine. */
  shutdown(deadlineMs: number): Promise<void>;
}

/** The waiting queue is full; the server answers 429 with `Retry-After`. */
export class QueueFullError extends Error {
  override readonly name = 'QueueFullError';
  constructor(
    message: string,
    /** Suggested seconds before retrying. */
    readonly retryAfterSeconds: number,
  ) {
    super(message);
  }
}

/** Callbacks through which the backend reports what metrics count; all optional. */
export interface BackendObserver {
  /** One `session.run`: its kind, number of rows and wall time. */
  onStep?(kind: 'prefill' | 'decode', numRows: number, seconds: number): void;
  /** Jobs waiting for admission, after every change. */
  onQueueDepth?(numWaiting: number): void;
  /** A module looked up in the cache: hit, or a miss followed by a load of `sizeBytes` taking `seconds`. */
  onModuleCache?(event: { kind: 'hit' } | { kind: 'miss'; sizeBytes: number; seconds: number } | { kind: 'eviction'; sizeBytes: number }): void;
  /** The model finished loading: at start and again after each restart of the engine. */
  onModelLoaded?(seconds: number, numParameters: number): void;
  /** The engine crashed, is being restarted, is back, or will not be restarted again; for logs. */
  onEngineStatus?(event: EngineStatusEvent): void;
}

/**
 * A change of the engine's availability. `attempt` counts restarts since the engine last ran
 * stably (1 for the first restart after a crash); `message` is a log line with the reason.
 */
export interface EngineStatusEvent {
  readonly kind: 'crashed' | 'restarting' | 'restarted' | 'gave_up';
  readonly attempt: number;
  readonly message: string;
}
