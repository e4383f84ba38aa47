/**
 * Test fixtures for the server: a scripted fake backend, stories260k loaded once, module folders
 * and a started app on 127.0.0.1 with a random port.
 * @module
 */
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import { writeModule } from '../../src/adapters/module-files.js';
import { createInducerModule } from '../../src/adapters/module.js';
import type { AdapterConfig } from '../../src/adapters/adapter-config.js';
import { AdapterStore } from '../../src/adapters/store.js';
import { loadCheckpoint } from '../../src/model/checkpoint.js';
import type { ModelConfig } from '../../src/model/config.js';
import { fingerprintModel, type BaseModelFingerprint } from '../../src/model/fingerprint.js';
import { loadTokenizer, type TextTokenizer } from '../../src/model/tokenizer.js';
import {
  QueueFullError,
  type BackendObserver,
  type BackendStats,
  type CompletionJob,
  type InferenceBackend,
  type JobEvent,
} from '../../src/runtime/backend.js';
import type { ApiKeyTable } from '../../src/server/auth.js';
import { createApp, type ServerLifecycle } from '../../src/server/app.js';
import { createMetrics, type ServerMetrics } from '../../src/server/metrics.js';

export const STORIES_DIR = '/work/shared/models/stories260k';

/**
 * Ids of "Once upon a time, there was a little girl named Lily." without the BOS token, from the
 * stories260k README's known tokenization.
 */
export const SCRIPT_IDS = [403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426];
export const SCRIPT_TEXT = 'Once upon a time, there was a little girl named Lily.';

export interface StoriesModel {
  config: ModelConfig;
  fingerprint: BaseModelFingerprint;
  tokenizer: TextTokenizer;
}

let stories: Promise<StoriesModel> | null = null;

export function loadStories(): Promise<StoriesModel> {
  stories ??= (async () => {
    const checkpoint = await loadCheckpoint(STORIES_DIR);
    return {
      config: checkpoint.config,
      fingerprint: await fingerprintModel(checkpoint.config, checkpoint.weightFiles),
      tokenizer: await loadTokenizer(STORIES_DIR, checkpoint.config),
    };
  })();
  return stories;
}

/** Writes a valid module folder for stories260k (or for `fingerprint` when given) and returns its path. */
export async function makeModuleDir(
  parent: string,
  folder: string,
  options: { task?: AdapterConfig['task']; fingerprint?: BaseModelFingerprint; seed?: number } = {},
): Promise<string> {
  const model = await loadStories();
  const module = createInducerModule(model.config, options.fingerprint ?? model.fingerprint, { keyRank: 2, valueRank: 4, loraQ: null }, {
    init: 'default',
    seed: options.seed ?? 1,
    task: options.task,
  });
  const dir = path.join(parent, folder);
  await writeModule(dir, module);
  return dir;
}

interface FakeJob {
  job: CompletionJob;
  onEvent: (event: JobEvent) => void;
  cancelled: boolean;
  numEmitted: number;
}

/**
 * Backend that "generates" {@link SCRIPT_IDS} in order for every job (finish reason `eos` after
 * the last one, `length` at max_tokens), one token per macrotask. Each token has logprob -1 and
 * alternatives with logprobs -2, -3, ...; prompt logprobs are all -0.5. With `holding` set,
 * tokens wait until `release()`.
 */
export class FakeBackend implements InferenceBackend {
  readonly submitted: CompletionJob[] = [];
  readonly cancelled: string[] = [];
  readonly evicted: string[] = [];
  readonly active = new Map<string, FakeJob>();
  maxQueue = Number.POSITIVE_INFINITY;
  holding = false;
  ready = true;
  /** When set, every job fails with this error event instead of generating. */
  failure: { status: number; code: string; message: string; retryAfterSeconds?: number } | null = null;
  shutdownDeadlineMs: number | null = null;
  private readonly observer: BackendObserver;
  private readonly seenModules = new Set<string>();

  constructor(observer: BackendObserver = {}) {
    this.observer = observer;
  }

  submit(job: CompletionJob, onEvent: (event: JobEvent) => void): void {
    if (this.active.size >= this.maxQueue) {
      throw new QueueFullError(`the waiting queue is full (${this.active.size} of ${this.maxQueue} jobs); retry later`, 3);
    }
    this.submitted.push(job);
    const entry: FakeJob = { job, onEvent, cancelled: false, numEmitted: 0 };
    this.active.set(job.id, entry);
    this.observer.onQueueDepth?.(this.active.size);
    if (job.module.kind === 'adapter') {
      if (this.seenModules.has(job.module.key)) this.observer.onModuleCache?.({ kind: 'hit' });
      else this.observer.onModuleCache?.({ kind: 'miss', sizeBytes: 1234, seconds: 0.002 });
      this.seenModules.add(job.module.key);
    }
    setImmediate(() => this.start(entry));
  }

  cancel(jobId: string): void {
    this.cancelled.push(jobId);
    const entry = this.active.get(jobId);
    if (entry !== undefined) entry.cancelled = true;
    if (entry !== undefined && this.holding) this.finish(entry, 'cancelled');
  }

  evictModule(key: string): void {
    this.evicted.push(key);
  }

  stats(): BackendStats {
    return { ready: this.ready, waitingJobs: 0, runningJobs: this.active.size };
  }

  /** Waits until no job is active or `deadlineMs` passed, then ends the rest as cancelled, as the worker backend does. */
  async shutdown(deadlineMs: number): Promise<void> {
    this.shutdownDeadlineMs = deadlineMs;
    const deadline = Date.now() + deadlineMs;
    while (this.active.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    for (const entry of [...this.active.values()]) this.finish(entry, 'cancelled');
  }

  /** Lets held jobs generate. */
  release(): void {
    this.holding = false;
    for (const entry of this.active.values()) setImmediate(() => this.step(entry));
  }

  private start(entry: FakeJob): void {
    if (this.failure !== null) {
      this.active.delete(entry.job.id);
      entry.onEvent({ type: 'error', jobId: entry.job.id, ...this.failure });
      return;
    }
    if (entry.job.promptLogprobs) {
      entry.onEvent({ type: 'prompt_logprobs', jobId: entry.job.id, logprobs: entry.job.promptIds.slice(1).map(() => -0.5) });
    }
    this.observer.onStep?.('prefill', 1, 0.001);
    if (!this.holding) this.step(entry);
  }

  private step(entry: FakeJob): void {
    if (!this.active.has(entry.job.id)) return;
    if (entry.cancelled) return this.finish(entry, 'cancelled');
    if (entry.numEmitted >= entry.job.maxNewTokens) return this.finish(entry, 'length');
    if (entry.numEmitted >= SCRIPT_IDS.length) return this.finish(entry, 'eos');
    const tokenId = SCRIPT_IDS[entry.numEmitted];
    entry.numEmitted++;
    const topLogprobs = Array.from({ length: entry.job.topLogprobs }, (_, i) => ({ tokenId: 10 + i, logprob: -2 - i }));
    this.observer.onStep?.('decode', 1, 0.001);
    entry.onEvent({ type: 'token', jobId: entry.job.id, tokenId, logprob: -1, ...(entry.job.topLogprobs > 0 ? { topLogprobs } : {}) });
    if (!this.holding) setImmediate(() => this.step(entry));
  }

  private finish(entry: FakeJob, finishReason: 'length' | 'eos' | 'cancelled'): void {
    if (!this.active.delete(entry.job.id)) return;
    this.observer.onQueueDepth?.(this.active.size);
    entry.onEvent({
      type: 'done',
      jobId: entry.job.id,
      finishReason,
      promptTokens: entry.job.promptIds.length,
      completionTokens: entry.numEmitted,
    });
  }
}

export interface TestServer {
  url: string;
  server: Server;
  backend: FakeBackend | InferenceBackend;
  store: AdapterStore;
  metrics: ServerMetrics;
  lifecycle: ServerLifecycle;
  storeDir: string;
  close(): Promise<void>;
}

/** Starts the app on 127.0.0.1 with a random port and a fresh store folder. */
export async function startServer(options: {
  backend?: InferenceBackend;
  apiKeys?: ApiKeyTable | null;
  limits?: { maxJsonBytes?: number; maxUploadBytes?: number };
  metrics?: ServerMetrics;
  modelId?: string;
  logger?: Logger;
}): Promise<TestServer> {
  const model = await loadStories();
  const storeDir = await mkdtemp(path.join(tmpdir(), 'inducer-store-'));
  const metrics = options.metrics ?? createMetrics();
  const backend = options.backend ?? new FakeBackend(metrics.observer);
  const store = new AdapterStore({ root: storeDir, model: model.config, fingerprint: model.fingerprint, onRetire: (key) => backend.evictModule(key) });
  await store.init();
  const lifecycle: ServerLifecycle = { draining: false };
  const app = createApp({
    backend,
    model: { id: options.modelId ?? 'stories260k', ...model, createdAt: 1700000000 },
    store,
    apiKeys: options.apiKeys ?? null,
    metrics,
    logger: options.logger ?? pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
    limits: options.limits,
    lifecycle,
  });
  const server: Server = await new Promise((resolve) => {
    const listening = app.listen(0, '127.0.0.1', () => resolve(listening));
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    backend,
    store,
    metrics,
    lifecycle,
    storeDir,
    close: async () => {
      server.closeAllConnections();
      if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(storeDir, { recursive: true, force: true });
    },
  };
}

/** Builds the multipart body of a module upload from file contents by field name. */
export function moduleForm(files: Record<string, Uint8Array | string>): FormData {
  const form = new FormData();
  for (const [field, content] of Object.entries(files)) {
    const part = typeof content === 'string' ? content : new Uint8Array(content);
    form.append(field, new Blob([part]), field);
  }
  return form;
}

/** Parses an SSE body into its data payloads. */
export function parseSse(body: string): string[] {
  return body
    .split('\n\n')
    .filter((block) => block.startsWith('data: '))
    .map((block) => block.slice('data: '.length));
}
