/**
 * The main-thread side of the inference backend: a proxy to the engine worker
 * (`engine-worker.ts`) that forwards jobs, routes events back to each job's listener, counts
 * waiting jobs to reject work beyond the queue limit, turns metric messages into observer
 * calls, and ends every job with an error if the worker dies.
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
  type InferenceBackend,
  type JobEvent,
} from './backend.js';
import { ENGINE_WORKER_TAG, type EngineWorkerSettings, type WorkerMessage, type WorkerRequest } from './engine-worker.js';

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
}

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

interface PendingJob {
  readonly onEvent: (event: JobEvent) => void;
  readonly promptTokens: number;
  state: 'waiting' | 'running';
  /** Set by {@link WorkerBackendImpl.cancel}: later tokens are dropped and the job ends as cancelled. */
  cancelRequested: boolean;
  /** Tokens passed to `onEvent`. */
  numDeliveredTokens: number;
}

type BackendState = 'ready' | 'stopping' | 'stopped' | 'crashed';

class WorkerBackendImpl implements WorkerBackend {
  /** Jobs submitted and not yet ended, by id. */
  private readonly jobs = new Map<string, PendingJob>();
  private numWaiting = 0;
  private state: BackendState = 'ready';
  private shutdownPromise: Promise<void> | null = null;
  /** Resolves when the worker thread has exited. */
  private readonly exited: Promise<void>;
  private lastWorkerError: Error | null = null;

  constructor(
    private readonly worker: Worker,
    readonly model: WorkerBackendModel,
    private readonly settings: EngineWorkerSettings,
    private readonly observer: BackendObserver,
  ) {
    worker.on('message', (message: WorkerMessage) => this.onMessage(message));
    worker.on('error', (error) => {
      this.lastWorkerError = error;
    });
    this.exited = new Promise((resolve) => {
      worker.once('exit', (exitCode) => {
        this.onExit(exitCode);
        resolve();
      });
    });
  }

  submit(job: CompletionJob, onEvent: (event: JobEvent) => void): void {
    if (this.state !== 'ready') {
      const message =
        this.state === 'crashed'
          ? `job ${job.id}: the inference engine stopped (${this.lastWorkerError?.message ?? 'worker exited'}); restart the server`
          : `job ${job.id}: the backend is shutting down`;
      const code = this.state === 'crashed' ? 'engine_unavailable' : 'shutting_down';
      queueMicrotask(() => onEvent({ type: 'error', jobId: job.id, status: 503, code, message }));
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

  cancel(jobId: string): void {
    const job = this.jobs.get(jobId);
    if (job === undefined || job.cancelRequested) return;
    job.cancelRequested = true;
    this.send({ type: 'cancel', jobId });
  }

  evictModule(key: string): void {
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
    if (this.state === 'ready') {
      this.state = 'stopping';
      this.send({ type: 'shutdown', deadlineMs });
    }
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, Math.max(0, deadlineMs) + SHUTDOWN_GRACE_MS);
    });
    await Promise.race([this.exited, timedOut]);
    clearTimeout(timer);
    // The worker closes its port after `closed`, which does not end the thread while
    // onnxruntime keeps handles, so terminate it either way.
    await this.worker.terminate();
    await this.exited;
  }

  private send(request: WorkerRequest): void {
    this.worker.postMessage(request);
  }

  private onMessage(message: WorkerMessage): void {
    switch (message.type) {
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
        void this.worker.terminate();
        break;
      case 'ready':
      case 'load_failed':
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

  /** Ends every remaining job: as cancelled after a shutdown, with an error after a crash. */
  private onExit(exitCode: number): void {
    // A shutdown terminates the worker on purpose; any other exit, or an uncaught error even
    // during shutdown, is a crash.
    const crashed = this.state === 'ready' || this.lastWorkerError !== null;
    this.state = crashed ? 'crashed' : 'stopped';
    const reason = this.lastWorkerError?.message ?? `the worker exited with code ${exitCode}`;
    for (const [jobId, job] of [...this.jobs]) {
      this.remove(jobId, job);
      if (crashed) {
        job.onEvent({ type: 'error', jobId, status: 500, code: 'engine_crashed', message: `job ${jobId}: the inference engine stopped: ${reason}` });
      } else {
        job.onEvent({ type: 'done', jobId, finishReason: 'cancelled', promptTokens: job.promptTokens, completionTokens: job.numDeliveredTokens });
      }
    }
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
  const url = options.workerUrl ?? new URL('./engine-worker.js', import.meta.url);
  const worker = new Worker(url, { workerData: { tag: ENGINE_WORKER_TAG, settings } });

  const model = await new Promise<WorkerBackendModel>((resolve, reject) => {
    const cleanUp = (): void => {
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
    };
    const fail = (message: string): void => {
      cleanUp();
      void worker.terminate();
      reject(new BackendStartError(message));
    };
    const onMessage = (message: WorkerMessage): void => {
      if (message.type === 'load_failed') fail(message.message);
      if (message.type !== 'ready') return;
      cleanUp();
      const dir = message.model.dir;
      resolve({ id: path.basename(path.resolve(dir)), ...message.model });
    };
    const onError = (error: Error): void => fail(`the engine worker failed while loading the model from ${settings.modelDir}: ${error.message}`);
    const onExit = (exitCode: number): void => fail(`the engine worker exited with code ${exitCode} while loading the model from ${settings.modelDir}`);
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
  });

  observer.onModelLoaded?.(model.loadSeconds, model.parameterCount);
  return new WorkerBackendImpl(worker, model, settings, observer);
}
