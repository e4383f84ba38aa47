/**
 * The main-thread side of the inference backend: a proxy to the engine worker
 * (`engine-worker.ts`) that forwards jobs, routes events back to each job's listener, counts
 * waiting jobs to reject work beyond the queue limit, turns metric messages into observer
 * calls, and ends every job with an error if the worker dies. After such a crash it starts a new
 * worker with the same settings, backing off between failed attempts (see {@link RestartPolicy}).
 * @module
 */
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { ModelConfig } from '../model/config.js';
import type { BaseModelFingerprint } from '../model/fingerprint.js';
import {
  QueueFullError,
  type BackendObserver,
  type BackendStats,
  type CompletionJob,
  type EngineStatusEvent,
  type InferenceBackend,
  type JobEvent,
} from './backend.js';
import { ENGINE_WORKER_TAG, type EngineWorkerSettings, type WorkerMessage, type WorkerModelInfo, type WorkerRequest } from './engine-worker.js';

/** Settings of {@link createWorkerBackend}. */
export interface WorkerBackendOptions {
  /** Hugging Face model folder (config.json, weights, tokenizer). */
  readonly modelDir: string;
  /** Maximum distinct modules in one batch (module slots of the engine). Default 8. */
  readonly slotCapacity?: number;
  /** Maximum jobs running at once. Default 8. */
  readonly maxBatchSize?: number;
  /** Maximum jobs waiting for admission; {@link InferenceBackend.submit} throws {@link QueueFullError} beyond it. Default 256. */
  readonly maxQueue?: number;
  /** Token budget of one prefill step: admitted jobs times their longest prompt. Default 2048. */
  readonly maxBatchTokens?: number;
  /** Maximum bytes of module parameters kept in the worker's module cache. Default 256 MiB. */
  readonly cacheBytes?: number;
  /** ONNX Runtime intra-op threads; default lets ONNX Runtime choose. */
  readonly intraOpThreads?: number;
  /**
   * Worker entry module. Default: `engine-worker.js` next to this file. Tests and tools that
   * wrap the engine worker pass their own entry, which must import the default one.
   */
  readonly workerUrl?: URL;
  /** When and how often to start a new worker after the running one dies. */
  readonly restart?: Partial<RestartPolicy>;
}

/**
 * Restarts after a worker crash. The n-th restart in a row waits `initialDelayMs * 2^(n-1)`,
 * at most `maxDelayMs`. A crash counts as one more in the row unless the crashed worker had run
 * for `stableMs`. A worker that fails to load the model counts too. After `maxAttempts` restarts
 * in a row have failed, the backend stops trying and rejects jobs until the server is restarted.
 */
export interface RestartPolicy {
  /** Restarts in a row before giving up; 0 turns restarts off. Default 5. */
  readonly maxAttempts: number;
  /** Wait before the first restart, in milliseconds. Default 1000. */
  readonly initialDelayMs: number;
  /** Maximum wait between restarts, in milliseconds. Default 30000. */
  readonly maxDelayMs: number;
  /** Milliseconds a worker must run after loading before its crash starts a new row of restarts. Default 60000. */
  readonly stableMs: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicy = {
  maxAttempts: 5,
  initialDelayMs: 1000,
  maxDelayMs: 30_000,
  stableMs: 60_000,
};

/** The model that the backend serves. */
export interface WorkerBackendModel {
  /** Name of the model folder, for `GET /v1/models`. */
  readonly id: string;
  /** Resolved model folder. */
  readonly dir: string;
  readonly config: ModelConfig;
  readonly fingerprint: BaseModelFingerprint;
  readonly parameterCount: number;
  /** Seconds the worker took to read the checkpoint and build the session. */
  readonly loadSeconds: number;
}

export type WorkerBackend = InferenceBackend & { readonly model: WorkerBackendModel };

export class BackendOptionsError extends Error {
  override readonly name = 'BackendOptionsError';
}

/** The worker failed to start or to load the model. */
export class BackendStartError extends Error {
  override readonly name = 'BackendStartError';
}

/** A job with the same id is still waiting or running. */
export class DuplicateJobIdError extends Error {
  override readonly name = 'DuplicateJobIdError';
}

export const DEFAULT_BACKEND_OPTIONS = {
  slotCapacity: 8,
  maxBatchSize: 8,
  maxQueue: 256,
  maxBatchTokens: 2048,
  cacheBytes: 256 * 1024 * 1024,
} as const;

/**
 * Time allowed after the shutdown deadline for the step in progress to end and the session to be
 * released before the worker is terminated.
 */
const SHUTDOWN_GRACE_MS = 2000;

function resolveSettings(options: WorkerBackendOptions): EngineWorkerSettings {
  const settings: EngineWorkerSettings = {
    modelDir: options.modelDir,
    slotCapacity: options.slotCapacity ?? DEFAULT_BACKEND_OPTIONS.slotCapacity,
    maxBatchSize: options.maxBatchSize ?? DEFAULT_BACKEND_OPTIONS.maxBatchSize,
    maxQueue: options.maxQueue ?? DEFAULT_BACKEND_OPTIONS.maxQueue,
    maxBatchTokens: options.maxBatchTokens ?? DEFAULT_BACKEND_OPTIONS.maxBatchTokens,
    cacheBytes: options.cacheBytes ?? DEFAULT_BACKEND_OPTIONS.cacheBytes,
    ...(options.intraOpThreads === undefined ? {} : { intraOpThreads: options.intraOpThreads }),
  };
  if (typeof settings.modelDir !== 'string' || settings.modelDir === '') {
    throw new BackendOptionsError('backend option modelDir must name the model folder');
  }
  const counts: [string, number | undefined][] = [
    ['slotCapacity', settings.slotCapacity],
    ['maxBatchSize', settings.maxBatchSize],
    ['maxQueue', settings.maxQueue],
    ['maxBatchTokens', settings.maxBatchTokens],
    ['cacheBytes', settings.cacheBytes],
    ['intraOpThreads', settings.intraOpThreads],
  ];
  for (const [name, value] of counts) {
    if (value !== undefined && !(Number.isSafeInteger(value) && value >= 1)) {
      throw new BackendOptionsError(`backend option ${name} must be a positive integer, got ${value}`);
    }
  }
  return settings;
}

function resolveRestartPolicy(options: WorkerBackendOptions): RestartPolicy {
  const policy: RestartPolicy = { ...DEFAULT_RESTART_POLICY, ...options.restart };
  for (const [name, value] of Object.entries(policy) as [keyof RestartPolicy, number][]) {
    if (!(Number.isSafeInteger(value) && value >= 0)) {
      throw new BackendOptionsError(`backend option restart.${name} must be an integer >= 0, got ${value}`);
    }
  }
  return policy;
}

interface PendingJob {
  readonly onEvent: (event: JobEvent) => void;
  readonly promptTokens: number;
  state: 'waiting' | 'running';
  /** Set by {@link WorkerBackendImpl.cancel}: later tokens are dropped and the job ends as cancelled. */
  cancelRequested: boolean;
  /** Tokens passed to `onEvent`. */
  numDeliveredTokens: number;
}

/**
 * `starting`: the first worker loads the model. `restarting`: waiting to start a new worker after
 * a crash, or that worker loads the model. `failed`: restarts gave up.
 */
type BackendState = 'starting' | 'ready' | 'restarting' | 'failed' | 'stopping' | 'stopped';

/** The start of a worker in progress, settled by its `ready` message or its failure. */
interface PendingStart {
  readonly resolve: (model: WorkerModelInfo) => void;
  readonly reject: (error: BackendStartError) => void;
}

class WorkerBackendImpl implements WorkerBackend {
  /** Jobs submitted and not yet ended, by id. */
  private readonly jobs = new Map<string, PendingJob>();
  private numWaiting = 0;
  private state: BackendState = 'starting';
  private shutdownPromise: Promise<void> | null = null;
  /** The current worker thread, running or loading; null between restarts. */
  private worker: Worker | null = null;
  /** Resolves when the last worker started has exited. */
  private exited: Promise<void> = Promise.resolve();
  private lastWorkerError: Error | null = null;
  private pendingStart: PendingStart | null = null;
  private currentModel: WorkerBackendModel | null = null;
  /** When the current worker reported `ready` (performance.now). */
  private readyAt = 0;
  /** Crashes and failed starts in a row; see {@link RestartPolicy}. */
  private numFailures = 0;
  /** Reason the engine last stopped, for the messages of rejected jobs. */
  private lastFailure = '';
  private restartTimer: NodeJS.Timeout | null = null;
  /** When the next start begins (performance.now). */
  private restartAt = 0;

  constructor(
    private readonly settings: EngineWorkerSettings,
    private readonly url: URL,
    private readonly policy: RestartPolicy,
    private readonly observer: BackendObserver,
  ) {}

  get model(): WorkerBackendModel {
    if (this.currentModel === null) throw new BackendStartError('the backend has not loaded the model yet; await createWorkerBackend first');
    return this.currentModel;
  }

  /** Starts the first worker; throws {@link BackendStartError} when it cannot load the model. */
  async start(): Promise<void> {
    this.becomeReady(await this.launch());
  }

  submit(job: CompletionJob, onEvent: (event: JobEvent) => void): void {
    if (this.state !== 'ready') {
      const event = this.rejection(job.id);
      queueMicrotask(() => onEvent(event));
      return;
    }
    if (this.jobs.has(job.id)) throw new DuplicateJobIdError(`job ${job.id} is already waiting or running; give every job a unique id`);
    if (this.numWaiting >= this.settings.maxQueue) {
      throw new QueueFullError(`the waiting queue is full (${this.numWaiting} of ${this.settings.maxQueue} jobs); retry later`, 1);
    }
    this.jobs.set(job.id, { onEvent, promptTokens: job.promptIds.length, state: 'waiting', cancelRequested: false, numDeliveredTokens: 0 });
    this.numWaiting += 1;
    this.observer.onQueueDepth?.(this.numWaiting);
    this.send({ type: 'submit', job });
  }

  /** Returns the error event for a job submitted while the backend does not accept jobs. */
  private rejection(jobId: string): JobEvent {
    switch (this.state) {
      case 'restarting':
      case 'starting': {
        // The wait before the next start plus one model load, which the last load estimates.
        const loadMs = (this.currentModel?.loadSeconds ?? 0) * 1000;
        const retryAfterSeconds = Math.max(1, Math.ceil((Math.max(0, this.restartAt - performance.now()) + loadMs) / 1000));
        return {
          type: 'error',
          jobId,
          status: 503,
          code: 'engine_unavailable',
          message: `job ${jobId}: the inference engine is restarting after a crash (${this.lastFailure}); retry in about ${retryAfterSeconds} s`,
          retryAfterSeconds,
        };
      }
      case 'failed':
        return {
          type: 'error',
          jobId,
          status: 503,
          code: 'engine_unavailable',
          message: `job ${jobId}: the inference engine stopped and is not restarted any more (last failure: ${this.lastFailure}); restart the server`,
        };
      default:
        return { type: 'error', jobId, status: 503, code: 'shutting_down', message: `job ${jobId}: the backend is shutting down` };
    }
  }

  cancel(jobId: string): void {
    const job = this.jobs.get(jobId);
    if (job === undefined || job.cancelRequested) return;
    job.cancelRequested = true;
    this.send({ type: 'cancel', jobId });
  }

  evictModule(key: string): void {
    // A worker that starts later begins with an empty module cache, so only a running one needs this.
    if (this.state === 'ready' || this.state === 'stopping') this.send({ type: 'evict', key });
  }

  stats(): BackendStats {
    return { ready: this.state === 'ready', waitingJobs: this.numWaiting, runningJobs: this.jobs.size - this.numWaiting };
  }

  shutdown(deadlineMs: number): Promise<void> {
    this.shutdownPromise ??= this.stop(deadlineMs);
    return this.shutdownPromise;
  }

  private async stop(deadlineMs: number): Promise<void> {
    if (this.restartTimer !== null) {
      clearTimeout(this.restartTimer);
      this.restartTimer = null;
    }
    const worker = this.worker;
    if (this.state !== 'ready' || worker === null) {
      // No jobs run while the engine restarts or after it gave up, so a worker still loading is simply terminated.
      this.state = 'stopped';
      if (worker !== null) await worker.terminate();
      await this.exited;
      return;
    }
    this.state = 'stopping';
    this.send({ type: 'shutdown', deadlineMs });
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, Math.max(0, deadlineMs) + SHUTDOWN_GRACE_MS);
    });
    await Promise.race([this.exited, timedOut]);
    clearTimeout(timer);
    // The worker closes its port after `closed`, which does not end the thread while
    // onnxruntime keeps handles, so terminate it either way.
    await worker.terminate();
    await this.exited;
  }

  private send(request: WorkerRequest): void {
    this.worker?.postMessage(request);
  }

  // #region worker lifecycle

  /** Starts a worker thread; resolves when it has loaded the model, rejects with {@link BackendStartError} otherwise. */
  private launch(): Promise<WorkerModelInfo> {
    const worker = new Worker(this.url, { workerData: { tag: ENGINE_WORKER_TAG, settings: this.settings } });
    this.worker = worker;
    this.lastWorkerError = null;
    this.exited = new Promise((resolve) => {
      worker.once('exit', (exitCode) => {
        if (worker === this.worker) this.onExit(exitCode);
        resolve();
      });
    });
    worker.on('error', (error) => {
      if (worker !== this.worker) return;
      this.lastWorkerError = error;
      this.failStart(`the engine worker failed while loading the model from ${this.settings.modelDir}: ${error.message}`);
    });
    worker.on('message', (message: WorkerMessage) => {
      if (worker === this.worker) this.onMessage(message);
    });
    return new Promise((resolve, reject) => {
      this.pendingStart = { resolve, reject };
    });
  }

  /** Ends the start in progress, if any, with an error and terminates its worker. */
  private failStart(message: string): void {
    const start = this.pendingStart;
    if (start === null) return;
    this.pendingStart = null;
    const worker = this.worker;
    // Detached first, so that its exit is not taken for a crash of a running worker.
    this.worker = null;
    void worker?.terminate();
    start.reject(new BackendStartError(message));
  }

  private becomeReady(info: WorkerModelInfo): void {
    this.currentModel = { id: path.basename(path.resolve(info.dir)), ...info };
    const restarted = this.state === 'restarting';
    this.state = 'ready';
    this.readyAt = performance.now();
    this.observer.onModelLoaded?.(info.loadSeconds, info.parameterCount);
    if (restarted) this.report({ kind: 'restarted', attempt: this.numFailures, message: `the inference engine is ready again after restart ${this.numFailures}` });
  }

  /** Schedules the next start of a worker as {@link RestartPolicy} sets out, or gives up. */
  private scheduleRestart(): void {
    this.numFailures += 1;
    if (this.numFailures > this.policy.maxAttempts) {
      this.state = 'failed';
      this.report({
        kind: 'gave_up',
        attempt: this.numFailures - 1,
        message:
          this.policy.maxAttempts === 0
            ? `the inference engine stopped and restarts are turned off (restart.maxAttempts is 0): ${this.lastFailure}; restart the server`
            : `the inference engine will not be restarted again: ${this.policy.maxAttempts} restarts in a row failed (last: ${this.lastFailure}); fix the cause and restart the server`,
      });
      return;
    }
    const delayMs = Math.min(this.policy.initialDelayMs * 2 ** (this.numFailures - 1), this.policy.maxDelayMs);
    this.state = 'restarting';
    this.restartAt = performance.now() + delayMs;
    this.report({
      kind: 'restarting',
      attempt: this.numFailures,
      message: `restarting the inference engine in ${delayMs} ms (attempt ${this.numFailures} of ${this.policy.maxAttempts}) after: ${this.lastFailure}`,
    });
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      void this.restart();
    }, delayMs);
  }

  private async restart(): Promise<void> {
    let info: WorkerModelInfo;
    try {
      info = await this.launch();
    } catch (error) {
      // A shutdown during the start ends it too; then nothing more may start.
      if (this.state !== 'restarting') return;
      this.lastFailure = error instanceof Error ? error.message : String(error);
      this.scheduleRestart();
      return;
    }
    // A shutdown during the start has already terminated this worker.
    if (this.state !== 'restarting') return;
    this.becomeReady(info);
  }

  private report(event: EngineStatusEvent): void {
    if (this.observer.onEngineStatus !== undefined) this.observer.onEngineStatus(event);
    else process.emitWarning(event.message, { code: `ENGINE_${event.kind.toUpperCase()}` });
  }

  // #endregion

  private onMessage(message: WorkerMessage): void {
    switch (message.type) {
      case 'ready': {
        const start = this.pendingStart;
        this.pendingStart = null;
        start?.resolve(message.model);
        break;
      }
      case 'load_failed':
        this.failStart(message.message);
        break;
      case 'admitted':
        for (const jobId of message.jobIds) {
          const job = this.jobs.get(jobId);
          if (job?.state !== 'waiting') continue;
          job.state = 'running';
          this.numWaiting -= 1;
        }
        this.observer.onQueueDepth?.(this.numWaiting);
        break;
      case 'event':
        this.deliver(message.event);
        break;
      case 'step':
        this.observer.onStep?.(message.kind, message.numRows, message.seconds);
        break;
      case 'module_cache':
        this.observer.onModuleCache?.(message.event);
        break;
      case 'closed':
        this.state = 'stopped';
        void this.worker?.terminate();
        break;
    }
  }

  private deliver(event: JobEvent): void {
    const job = this.jobs.get(event.jobId);
    if (job === undefined) return;
    if (event.type === 'token' || event.type === 'prompt_logprobs') {
      if (job.cancelRequested) return;
      if (event.type === 'token') job.numDeliveredTokens += 1;
      job.onEvent(event);
      return;
    }
    this.remove(event.jobId, job);
    if (event.type === 'done' && job.cancelRequested) {
      // The job may have ended on its own before the worker saw the cancellation; the listener
      // asked for a cancelled job and received only the tokens counted here.
      job.onEvent({ ...event, finishReason: 'cancelled', completionTokens: job.numDeliveredTokens });
      return;
    }
    job.onEvent(event);
  }

  private remove(jobId: string, job: PendingJob): void {
    this.jobs.delete(jobId);
    if (job.state === 'waiting') {
      this.numWaiting -= 1;
      this.observer.onQueueDepth?.(this.numWaiting);
    }
  }

  /**
   * Handles the exit of the current worker: a start in progress fails; otherwise every remaining
   * job ends, as cancelled after a shutdown or with an error after a crash, and a crash of a
   * running engine schedules a restart.
   */
  private onExit(exitCode: number): void {
    const reason = this.lastWorkerError?.message ?? `the worker exited with code ${exitCode}`;
    if (this.pendingStart !== null) {
      this.failStart(`the engine worker exited with code ${exitCode} while loading the model from ${this.settings.modelDir}`);
      return;
    }
    this.worker = null;
    // A shutdown terminates the worker on purpose; any other exit, or an uncaught error even
    // during shutdown, is a crash.
    const wasRunning = this.state === 'ready';
    const crashed = wasRunning || this.lastWorkerError !== null;
    const numJobs = this.jobs.size;
    for (const [jobId, job] of [...this.jobs]) {
      this.remove(jobId, job);
      if (crashed) {
        job.onEvent({ type: 'error', jobId, status: 500, code: 'engine_crashed', message: `job ${jobId}: the inference engine stopped: ${reason}` });
      } else {
        job.onEvent({ type: 'done', jobId, finishReason: 'cancelled', promptTokens: job.promptTokens, completionTokens: job.numDeliveredTokens });
      }
    }
    if (!wasRunning) {
      this.state = 'stopped';
      return;
    }
    this.report({ kind: 'crashed', attempt: this.numFailures, message: `the inference engine crashed and ended ${numJobs} jobs: ${reason}` });
    // A crash after a stable run starts a new row of restarts.
    if (performance.now() - this.readyAt >= this.policy.stableMs) this.numFailures = 0;
    this.lastFailure = reason;
    this.scheduleRestart();
  }
}

/**
 * Starts the engine worker, waits until it has loaded the model, and returns the backend.
 * Observer callbacks run on the calling thread. Throws {@link BackendOptionsError} for invalid
 * options and {@link BackendStartError} when the worker cannot load the model.
 *
 * NOTE: start one backend per process; onnxruntime-node has been reported to crash when several
 * workers load it.
 */
export async function createWorkerBackend(options: WorkerBackendOptions, observer: BackendObserver = {}): Promise<WorkerBackend> {
  const settings = resolveSettings(options);
  const policy = resolveRestartPolicy(options);
  const url = options.workerUrl ?? new URL('./engine-worker.js', import.meta.url);
  const backend = new WorkerBackendImpl(settings, url, policy, observer);
  await backend.start();
  return backend;
}
