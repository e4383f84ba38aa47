/**
 * Worker thread entry of the inference backend. The worker loads the model, owns the engine,
 * the module cache and the scheduler, and runs the continuous batching loop. Between two decode
 * steps it admits waiting jobs, prefills them together, samples their first tokens and merges
 * them into the running batch, then runs one decode step for every running row. Requests come in
 * and events go out as messages (see {@link WorkerRequest} and {@link WorkerMessage}); the main
 * thread side is `worker-backend.ts`.
 * @module
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { AdapterError, type AdapterErrorReason } from '../adapters/module.js';
import { ModuleCache, type ModuleCacheEvent } from '../adapters/module-cache.js';
import type { ModelConfig } from '../model/config.js';
import type { BaseModelFingerprint } from '../model/fingerprint.js';
import { QueueFullError, type CompletionJob, type JobEvent } from './backend.js';
import { BatchState, planPrefill, type BatchRow, type PrefillPlan } from './batch-state.js';
import type { ForwardOutput, KvCache } from './engine.js';
import { selectCacheRows } from './kv-cache.js';
import { loadModel, loadModuleFor, slotModuleOf, type LoadedModel } from './loaded-model.js';
import { logSoftmax, Sampler, topLogprobs } from './sampler.js';
import { Scheduler, type SchedulableJob } from './scheduler.js';
import { SlotCapacityError, type SlotModule } from './slot-table.js';

/** Settings the main thread passes as `workerData`. */
export interface EngineWorkerSettings {
  readonly modelDir: string;
  readonly slotCapacity: number;
  readonly maxBatchSize: number;
  readonly maxQueue: number;
  readonly maxBatchTokens: number;
  readonly cacheBytes: number;
  readonly intraOpThreads?: number;
}

/** Messages from the main thread to the worker. */
export type WorkerRequest =
  | { readonly type: 'submit'; readonly job: CompletionJob }
  | { readonly type: 'cancel'; readonly jobId: string }
  | { readonly type: 'evict'; readonly key: string }
  | { readonly type: 'shutdown'; readonly deadlineMs: number };

/** Facts about the loaded model that the worker sends to the main thread. */
export interface WorkerModelInfo {
  readonly dir: string;
  readonly config: ModelConfig;
  readonly fingerprint: BaseModelFingerprint;
  readonly parameterCount: number;
  readonly loadSeconds: number;
}

/** Messages from the worker to the main thread. */
export type WorkerMessage =
  | { readonly type: 'ready'; readonly model: WorkerModelInfo }
  | { readonly type: 'load_failed'; readonly message: string }
  /** Jobs that left the waiting queue and joined the running set. */
  | { readonly type: 'admitted'; readonly jobIds: readonly string[] }
  | { readonly type: 'event'; readonly event: JobEvent }
  | { readonly type: 'step'; readonly kind: 'prefill' | 'decode'; readonly numRows: number; readonly seconds: number }
  | { readonly type: 'module_cache'; readonly event: ModuleCacheEvent }
  /** Shutdown finished: every job has ended and the engine is released. */
  | { readonly type: 'closed' };

/** Marks `workerData` as settings of this worker, so importing the file elsewhere starts nothing. */
export const ENGINE_WORKER_TAG = 'inducer-engine-worker';

/**
 * Stage of a job inside the worker: `waiting` in the queue, `loading` its module after
 * admission, `ready` for prefill, `running` as a row of the batch.
 */
type WorkerJobState = 'waiting' | 'loading' | 'ready' | 'running';

interface WorkerJob extends SchedulableJob {
  readonly job: CompletionJob;
  state: WorkerJobState;
  readonly sampler: Sampler;
  /** Slot-table view of the job's module once loaded; null for the frozen model. */
  slotModule: SlotModule | null;
  /** Load of the module while `loading`. */
  load: Promise<void> | null;
  /** Token to feed in the next decode step. */
  pendingTokenId: number;
  numGeneratedTokens: number;
  /** Set by a cancel while the job is a batch row; the row leaves before the next step. */
  cancelRequested: boolean;
}

class InvalidJobError extends Error {
  override readonly name = 'InvalidJobError';
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

/** The module slot table failed in a way that may leave it inconsistent, so the worker must stop. */
class SlotTableBrokenError extends Error {
  override readonly name = 'SlotTableBrokenError';
  constructor(cause: unknown) {
    super(`the module slot table failed and may now be inconsistent, so the engine worker stops: ${errorMessage(cause)}`, { cause });
  }
}

/** Checks a job against the model's vocabulary and context; throws {@link InvalidJobError}. */
function validateJob(job: CompletionJob, config: ModelConfig): void {
  if (job.promptIds.length === 0) throw new InvalidJobError(`job ${job.id}: the prompt is empty; pass at least one token (for example BOS)`, 'invalid_request');
  for (const id of job.promptIds) {
    if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) {
      throw new InvalidJobError(`job ${job.id}: prompt token id ${id} is outside the vocabulary [0, ${config.vocabSize})`, 'invalid_request');
    }
  }
  if (!Number.isSafeInteger(job.maxNewTokens) || job.maxNewTokens < 0) {
    throw new InvalidJobError(`job ${job.id}: max new tokens must be an integer >= 0, got ${job.maxNewTokens}`, 'invalid_request');
  }
  if (!Number.isSafeInteger(job.topLogprobs) || job.topLogprobs < 0) {
    throw new InvalidJobError(`job ${job.id}: top logprobs must be an integer >= 0, got ${job.topLogprobs}`, 'invalid_request');
  }
  if (job.promptIds.length + job.maxNewTokens > config.maxPositions) {
    throw new InvalidJobError(
      `job ${job.id}: prompt of ${job.promptIds.length} tokens plus ${job.maxNewTokens} new tokens exceeds the model's context of ${config.maxPositions} tokens; shorten the prompt or lower max tokens`,
      'context_length_exceeded',
    );
  }
}

/** HTTP status and error code for a module that failed to load. */
function moduleErrorStatus(reason: AdapterErrorReason | undefined): { status: number; code: string } {
  switch (reason) {
    case 'not_found':
      return { status: 404, code: 'module_not_found' };
    case 'incompatible':
      return { status: 422, code: 'module_incompatible' };
    case 'invalid':
      return { status: 422, code: 'module_invalid' };
    default:
      return { status: 500, code: 'module_load_failed' };
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The batching loop of one loaded model. Exported for tests; the worker entry below creates it. */
export class EngineLoop {
  /** Every job that has not ended yet, by id: waiting, loading, ready or running. */
  private readonly jobs = new Map<string, WorkerJob>();
  private readonly scheduler: Scheduler<WorkerJob>;
  /** Rows that have been prefilled and take part in decode steps. */
  private readonly batch = new BatchState();
  private readonly moduleCache: ModuleCache;
  /** Resolves the current wait for work. */
  private wake: (() => void) | null = null;
  /** Something happened since the loop last looked (a message, a module load), so it must not wait. */
  private hasNews = false;
  /** Time (performance.now) after which running jobs are cancelled; null while not shutting down. */
  private shutdownDeadline: number | null = null;
  /**
   * The module of each version key that admitted jobs use, with the number of those jobs. A job
   * whose lookup returns another copy of a version already in use (the cache dropped it and
   * loaded it again) takes this one, so one version never needs two slots.
   */
  private readonly liveModules = new Map<string, { readonly module: SlotModule; users: number }>();
  /**
   * Modules to remove from the slot table before the next step. An eviction message can arrive
   * while a forward call is in progress, and that call reads the slot buffers, so the table
   * changes only between steps.
   */
  private readonly pendingSlotEvictions = new Set<SlotModule>();

  constructor(
    private readonly model: LoadedModel,
    settings: EngineWorkerSettings,
    private readonly port: MessagePort,
  ) {
    this.scheduler = new Scheduler<WorkerJob>({
      maxBatchSize: settings.maxBatchSize,
      maxBatchTokens: settings.maxBatchTokens,
      maxModules: settings.slotCapacity,
      maxQueue: settings.maxQueue,
    });
    this.moduleCache = new ModuleCache({
      maxBytes: settings.cacheBytes,
      load: (_key, dir) => loadModuleFor(model, dir),
      onEvent: (event) => this.post({ type: 'module_cache', event }),
    });
  }

  private post(message: WorkerMessage): void {
    this.port.postMessage(message);
  }

  handle(request: WorkerRequest): void {
    switch (request.type) {
      case 'submit':
        this.submit(request.job);
        break;
      case 'cancel':
        this.cancel(request.jobId);
        break;
      case 'evict':
        this.evict(request.key);
        break;
      case 'shutdown':
        this.startShutdown(request.deadlineMs);
        break;
    }
    this.notify();
  }

  /** Makes the loop look at its state again, now or when it next would wait. */
  private notify(): void {
    this.hasNews = true;
    this.wake?.();
  }

  private submit(job: CompletionJob): void {
    let sampler: Sampler;
    try {
      validateJob(job, this.model.config);
      sampler = new Sampler(job.sampling);
    } catch (error) {
      const code = error instanceof InvalidJobError ? error.code : 'invalid_request';
      this.post({ type: 'event', event: { type: 'error', jobId: job.id, status: 400, code, message: errorMessage(error) } });
      return;
    }
    if (this.scheduler.closed) {
      this.post({ type: 'event', event: { type: 'error', jobId: job.id, status: 503, code: 'shutting_down', message: `job ${job.id}: the backend is shutting down` } });
      return;
    }
    const entry: WorkerJob = {
      id: job.id,
      tenant: job.tenant,
      moduleKey: job.module.kind === 'adapter' ? job.module.key : null,
      numPromptTokens: job.promptIds.length,
      job,
      state: 'waiting',
      sampler,
      slotModule: null,
      load: null,
      pendingTokenId: -1,
      numGeneratedTokens: 0,
      cancelRequested: false,
    };
    try {
      this.scheduler.enqueue(entry);
    } catch (error) {
      // The main thread counts waiting jobs itself and rejects duplicates and jobs beyond the
      // queue limit before they get here, so this is a defect on that side.
      const { status, code } = error instanceof QueueFullError ? { status: 429, code: 'queue_full' } : { status: 400, code: 'invalid_request' };
      this.post({ type: 'event', event: { type: 'error', jobId: job.id, status, code, message: errorMessage(error) } });
      return;
    }
    this.jobs.set(job.id, entry);
  }

  private cancel(jobId: string): void {
    const entry = this.jobs.get(jobId);
    if (entry === undefined) return;
    if (entry.state === 'running') {
      entry.cancelRequested = true;
      return;
    }
    this.endCancelled(entry);
  }

  private evict(key: string): void {
    const module = this.moduleCache.evict(key);
    // Rows that still use the module keep their own reference, and the slot table loads it again for them.
    if (module !== undefined) this.pendingSlotEvictions.add(slotModuleOf(module));
    const live = this.liveModules.get(key);
    if (live !== undefined) this.pendingSlotEvictions.add(live.module);
  }

  private startShutdown(deadlineMs: number): void {
    if (this.shutdownDeadline !== null) return;
    this.shutdownDeadline = performance.now() + Math.max(0, deadlineMs);
    for (const entry of this.scheduler.close()) this.endCancelled(entry);
    setTimeout(() => this.notify(), Math.max(0, deadlineMs)).unref();
  }

  // #region job endings

  private end(entry: WorkerJob, event: JobEvent): void {
    if (!this.jobs.delete(entry.id)) return;
    this.releaseModule(entry);
    if (entry.state === 'waiting') this.scheduler.cancel(entry.id);
    else this.scheduler.finish(entry.id);
    this.post({ type: 'event', event });
  }

  /** Drops the job's use of its module version. */
  private releaseModule(entry: WorkerJob): void {
    if (entry.slotModule === null || entry.moduleKey === null) return;
    const live = this.liveModules.get(entry.moduleKey);
    if (live === undefined || live.module !== entry.slotModule) return;
    live.users -= 1;
    if (live.users === 0) this.liveModules.delete(entry.moduleKey);
  }

  private endDone(entry: WorkerJob, finishReason: 'length' | 'eos' | 'cancelled'): void {
    this.end(entry, {
      type: 'done',
      jobId: entry.id,
      finishReason,
      promptTokens: entry.job.promptIds.length,
      completionTokens: entry.numGeneratedTokens,
    });
  }

  private endCancelled(entry: WorkerJob): void {
    this.endDone(entry, 'cancelled');
  }

  private endError(entry: WorkerJob, status: number, code: string, message: string): void {
    this.end(entry, { type: 'error', jobId: entry.id, status, code, message });
  }

  // #endregion

  // #region loop

  /** Runs until shutdown has ended every job. */
  async run(): Promise<void> {
    for (;;) {
      this.hasNews = false;
      this.applySlotEvictions();
      this.cancelPastDeadline();
      this.removeCancelledRows();
      if (this.shutdownDeadline !== null && this.jobs.size === 0) return;

      const admitted = this.scheduler.admit();
      if (admitted.length > 0) {
        this.post({ type: 'admitted', jobIds: admitted.map((entry) => entry.id) });
        for (const entry of admitted) this.startLoad(entry);
      }
      // Lets cache hits settle and queued messages (cancellations, new jobs) arrive.
      await new Promise<void>((resolve) => setImmediate(resolve));

      const ready = this.scheduler.runningJobs().filter((entry) => entry.state === 'ready');
      if (ready.length > 0) await this.prefill(ready);
      this.removeCancelledRows();

      if (this.batch.size > 0) {
        await this.decode();
        continue;
      }
      if (ready.length > 0) continue;
      // The batch is empty, so what can change things now is a message or a module load.
      const loads = this.scheduler.runningJobs().flatMap((entry) => (entry.state === 'loading' && entry.load ? [entry.load] : []));
      await this.waitForWork(loads);
    }
  }

  /** Waits for the next message, or until every load in `loads` has settled. */
  private async waitForWork(loads: readonly Promise<void>[]): Promise<void> {
    if (this.hasNews) return;
    const woken = new Promise<void>((resolve) => {
      this.wake = resolve;
    });
    await (loads.length > 0 ? Promise.race([woken, Promise.allSettled(loads)]) : woken);
    this.wake = null;
  }

  /** Fetches the module of an admitted job through the cache; the job is ready for prefill when it arrives. */
  private startLoad(entry: WorkerJob): void {
    const module = entry.job.module;
    if (module.kind === 'base') {
      entry.state = 'ready';
      return;
    }
    entry.state = 'loading';
    entry.load = this.moduleCache.get(module.key, module.dir).then(
      (loaded) => {
        entry.load = null;
        if (!this.jobs.has(entry.id)) return;
        const live = this.liveModules.get(module.key);
        if (live !== undefined) {
          live.users += 1;
          entry.slotModule = live.module;
        } else {
          entry.slotModule = slotModuleOf(loaded);
          this.liveModules.set(module.key, { module: entry.slotModule, users: 1 });
        }
        entry.state = 'ready';
        // No wake: a waiting loop waits for all loads in progress, so their jobs prefill together.
        this.hasNews = true;
      },
      (error: unknown) => {
        entry.load = null;
        if (!this.jobs.has(entry.id)) return;
        const reason = error instanceof AdapterError ? error.reason : undefined;
        const { status, code } = moduleErrorStatus(reason);
        this.endError(entry, status, code, `module ${module.key} failed to load: ${errorMessage(error)}`);
        this.hasNews = true;
      },
    );
  }

  private cancelPastDeadline(): void {
    if (this.shutdownDeadline === null || performance.now() < this.shutdownDeadline) return;
    for (const entry of [...this.jobs.values()]) this.cancel(entry.id);
  }

  /** Ends cancelled rows and removes them from the batch. */
  private removeCancelledRows(): void {
    const cancelled = this.batch.rows.map((row) => this.jobs.get(row.jobId) as WorkerJob).filter((entry) => entry.cancelRequested);
    if (cancelled.length === 0) return;
    for (const entry of cancelled) this.endCancelled(entry);
    this.batch.keepRows(new Set(this.batch.rows.map((row) => row.jobId).filter((id) => this.jobs.has(id))));
  }

  /**
   * Returns the slot of each module in `modules`, assigned together with the modules of the
   * running rows so that preparing one step never pushes out a module the next step needs.
   */
  private slotsFor(modules: readonly (SlotModule | null)[], alongside: readonly (SlotModule | null)[]): number[] {
    this.applySlotEvictions();
    const slots = this.model.engine.slots.slotsFor([...alongside, ...modules]);
    return slots.slice(alongside.length);
  }

  /** Removes evicted modules from the slot table; call only between forward calls, which read the table's buffers. */
  private applySlotEvictions(): void {
    for (const module of this.pendingSlotEvictions) this.model.engine.slots.evict(module);
    this.pendingSlotEvictions.clear();
  }

  private runningModules(): (SlotModule | null)[] {
    return this.batch.rows.map((row) => (this.jobs.get(row.jobId) as WorkerJob).slotModule);
  }

  // #endregion

  // #region steps

  /**
   * Ends those of `entries` that have not ended yet with a 500 `engine_error` that names all of
   * them, so one failed step costs only its own jobs and the loop goes on.
   */
  private failJobs(entries: readonly WorkerJob[], stepName: string, error: unknown): void {
    const failed = entries.filter((entry) => this.jobs.has(entry.id));
    if (failed.length === 0) return;
    const message = `job${failed.length === 1 ? '' : 's'} ${failed.map((entry) => entry.id).join(', ')} failed in ${stepName}: ${errorMessage(error)}`;
    for (const entry of failed) this.endError(entry, 500, 'engine_error', message);
  }

  /** Ends every running row with an `engine_error` and empties the batch, whose rows and cache no longer match. */
  private resetBatch(stepName: string, error: unknown): void {
    this.failJobs(
      this.batch.rows.flatMap((row) => this.jobs.get(row.jobId) ?? []),
      stepName,
      error,
    );
    this.batch.keepRows(new Set());
  }

  /**
   * Assigns slots for one step. A {@link SlotCapacityError} fails only this step: the modules of
   * the call are evicted so that the next step writes them again, in case the error came from a
   * half-written slot. Any other error (such as a failed buffer allocation while the table grows)
   * leaves the table in a state this loop cannot check, so it becomes a {@link SlotTableBrokenError},
   * which ends the worker; the main thread then starts a new one.
   */
  private trySlotsFor(modules: readonly (SlotModule | null)[], alongside: readonly (SlotModule | null)[]): number[] {
    try {
      return this.slotsFor(modules, alongside);
    } catch (error) {
      if (!(error instanceof SlotCapacityError)) throw new SlotTableBrokenError(error);
      for (const module of [...alongside, ...modules]) if (module !== null) this.model.engine.slots.evict(module);
      throw error;
    }
  }

  /** Prefills `entries` in one forward call, emits their first events and merges the continuing rows into the batch. */
  private async prefill(entries: readonly WorkerJob[]): Promise<void> {
    let plan: PrefillPlan;
    let output: ForwardOutput;
    const started = performance.now();
    try {
      const slotIds = this.trySlotsFor(
        entries.map((entry) => entry.slotModule),
        this.runningModules(),
      );
      plan = planPrefill(
        entries.map((entry, r) => ({ promptIds: entry.job.promptIds, slotId: slotIds[r], allLogits: entry.job.promptLogprobs })),
      );
      for (const entry of entries) entry.state = 'running';
      output = await this.model.engine.forward(plan.input);
    } catch (error) {
      if (error instanceof SlotTableBrokenError) throw error;
      // Nothing above changes the batch, so the running rows go on.
      this.failJobs(entries, 'prefill', error);
      return;
    }
    this.post({ type: 'step', kind: 'prefill', numRows: entries.length, seconds: (performance.now() - started) / 1000 });

    const { logits, vocabSize } = output;
    const logitsRow = (index: number): Float32Array => logits.subarray(index * vocabSize, (index + 1) * vocabSize);
    const continuing: number[] = [];
    entries.forEach((entry, r) => {
      const { first, count } = plan.logitsRows[r];
      try {
        if (entry.job.promptLogprobs) this.emitPromptLogprobs(entry, (i) => logitsRow(first + i));
        if (entry.job.maxNewTokens === 0) {
          this.endDone(entry, 'length');
          return;
        }
        if (this.acceptToken(entry, logitsRow(first + count - 1))) continuing.push(r);
      } catch (error) {
        this.endError(entry, 500, 'sampling_failed', `job ${entry.id}: ${errorMessage(error)}`);
      }
    });
    if (continuing.length === 0) return;

    const continuingEntries = continuing.map((r) => entries[r]);
    let present: KvCache;
    try {
      present = continuing.length === entries.length ? output.present : selectCacheRows(output.present, continuing);
    } catch (error) {
      this.failJobs(continuingEntries, 'prefill', error);
      return;
    }
    const rows: BatchRow[] = continuing.map((r) => ({
      jobId: entries[r].id,
      mask: plan.masks[r],
      nextPosition: entries[r].job.promptIds.length,
    }));
    try {
      this.batch.merge(rows, present);
    } catch (error) {
      // A merge that fails part way may already have padded the masks of the running rows, so
      // neither the old batch nor the merged one can be trusted.
      this.failJobs(continuingEntries, 'the merge of new rows into the running batch', error);
      this.resetBatch('the merge of new rows into the running batch', error);
    }
  }

  /** Runs one decode step for every row of the batch and removes the rows that finished. */
  private async decode(): Promise<void> {
    const entries = this.batch.rows.map((row) => this.jobs.get(row.jobId) as WorkerJob);
    let output: ForwardOutput;
    const started = performance.now();
    try {
      const slotIds = this.trySlotsFor(this.runningModules(), []);
      const input = this.batch.decodeInput(
        entries.map((entry) => entry.pendingTokenId),
        slotIds,
      );
      output = await this.model.engine.forward(input);
      this.post({ type: 'step', kind: 'decode', numRows: entries.length, seconds: (performance.now() - started) / 1000 });
      this.batch.appendStep(output.present);
    } catch (error) {
      if (error instanceof SlotTableBrokenError) throw error;
      // Every row takes part in a decode step, so the whole batch fails.
      this.resetBatch('a decode step', error);
      return;
    }

    const { logits, vocabSize } = output;
    const continuing = new Set<string>();
    entries.forEach((entry, r) => {
      try {
        if (this.acceptToken(entry, logits.subarray(r * vocabSize, (r + 1) * vocabSize))) continuing.add(entry.id);
      } catch (error) {
        this.endError(entry, 500, 'sampling_failed', `job ${entry.id}: ${errorMessage(error)}`);
      }
    });
    try {
      this.batch.keepRows(continuing);
    } catch (error) {
      this.resetBatch('a decode step', error);
    }
  }

  /** Emits log p(prompt[i+1] | prompt[..i]) for every prompt position; `logitsAt(i)` is the logits row after prompt token i. */
  private emitPromptLogprobs(entry: WorkerJob, logitsAt: (i: number) => Float32Array): void {
    const prompt = entry.job.promptIds;
    const logprobs: number[] = [];
    for (let i = 0; i + 1 < prompt.length; i++) logprobs.push(logSoftmax(logitsAt(i))[prompt[i + 1]]);
    this.post({ type: 'event', event: { type: 'prompt_logprobs', jobId: entry.id, logprobs } });
  }

  /**
   * Samples the job's next token from `logits` and emits it, or ends the job on a stop token or
   * at its token limit. Returns whether the job continues with another decode step.
   */
  private acceptToken(entry: WorkerJob, logits: Float32Array): boolean {
    const { tokenId, logprob } = entry.sampler.sample(logits);
    if (entry.job.stopTokenIds.includes(tokenId)) {
      this.endDone(entry, 'eos');
      return false;
    }
    entry.numGeneratedTokens += 1;
    const alternatives = entry.job.topLogprobs > 0 ? topLogprobs(logits, entry.job.topLogprobs) : undefined;
    this.post({
      type: 'event',
      event: { type: 'token', jobId: entry.id, tokenId, logprob, ...(alternatives ? { topLogprobs: alternatives } : {}) },
    });
    if (entry.numGeneratedTokens >= entry.job.maxNewTokens) {
      this.endDone(entry, 'length');
      return false;
    }
    entry.pendingTokenId = tokenId;
    return true;
  }

  // #endregion

  async dispose(): Promise<void> {
    await this.model.engine.dispose();
  }
}

async function main(port: MessagePort, settings: EngineWorkerSettings): Promise<void> {
  // Requests that arrive while the model loads wait here; the main thread sends none before `ready`.
  const early: WorkerRequest[] = [];
  let loop: EngineLoop | null = null;
  port.on('message', (request: WorkerRequest) => {
    if (loop === null) early.push(request);
    else loop.handle(request);
  });

  let model: LoadedModel;
  try {
    model = await loadModel(settings.modelDir, {
      slotCapacity: settings.slotCapacity,
      ...(settings.intraOpThreads === undefined ? {} : { intraOpThreads: settings.intraOpThreads }),
    });
  } catch (error) {
    port.postMessage({ type: 'load_failed', message: `failed to load the model from ${settings.modelDir}: ${errorMessage(error)}` } satisfies WorkerMessage);
    port.close();
    return;
  }
  loop = new EngineLoop(model, settings, port);
  for (const request of early.splice(0)) loop.handle(request);
  port.postMessage({
    type: 'ready',
    model: {
      dir: model.dir,
      config: model.config,
      fingerprint: model.fingerprint,
      parameterCount: model.parameterCount,
      loadSeconds: model.loadSeconds,
    },
  } satisfies WorkerMessage);

  await loop.run();
  await loop.dispose();
  port.postMessage({ type: 'closed' } satisfies WorkerMessage);
  port.close();
}

const data = workerData as { tag?: string; settings?: EngineWorkerSettings } | null;
if (parentPort !== null && data?.tag === ENGINE_WORKER_TAG && data.settings !== undefined) {
  await main(parentPort, data.settings);
}
