/**
 * Review findings in the engine worker, on the real stories260k checkpoint: a version loaded
 * twice while a row still runs must share one slot, and an eviction that arrives during a
 * forward call must not change that call's module parameters. Backends run one at a time,
 * because onnxruntime-node should be loaded by one worker per process.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeModule } from '../../src/adapters/module-files.js';
import { createInducerModule } from '../../src/adapters/module.js';
import type { CompletionJob, JobEvent, JobModule } from '../../src/runtime/backend.js';
import { createWorkerBackend, type WorkerBackend } from '../../src/runtime/worker-backend.js';
import { EngineLoop, type EngineWorkerSettings, type WorkerMessage } from '../../src/runtime/engine-worker.js';
import { loadModel, type LoadedModel } from '../../src/runtime/loaded-model.js';
import type { ModelConfig } from '../../src/model/config.js';
import type { BaseModelFingerprint } from '../../src/model/fingerprint.js';

const MODEL_DIR = path.resolve('..', 'shared', 'models', 'stories260k');
const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };
const BOS = 1;

interface JobResult {
  readonly tokens: number[];
  readonly end: Extract<JobEvent, { type: 'done' | 'error' }>;
}

/** Submits a job and collects its tokens; `onToken` is called with the token count after each token. */
function run(backend: WorkerBackend, job: CompletionJob, onToken?: (count: number) => void): Promise<JobResult> {
  return new Promise((resolve) => {
    const tokens: number[] = [];
    backend.submit(job, (event) => {
      if (event.type === 'token') {
        tokens.push(event.tokenId);
        onToken?.(tokens.length);
      } else if (event.type === 'done' || event.type === 'error') {
        resolve({ tokens, end: event });
      }
    });
  });
}

let nextJobNumber = 0;

function makeJob(fields: Partial<CompletionJob>): CompletionJob {
  nextJobNumber += 1;
  return {
    id: `review-job-${nextJobNumber}`,
    tenant: 'tenant-a',
    module: { kind: 'base' },
    promptIds: [BOS],
    sampling: GREEDY,
    maxNewTokens: 20,
    stopTokenIds: [],
    topLogprobs: 0,
    promptLogprobs: false,
    ...fields,
  };
}

function endSummary(result: JobResult): string {
  return result.end.type === 'error' ? `${result.end.code}: ${result.end.message}` : `done (${result.end.finishReason})`;
}

/** Writes one inducer module that changes the greedy output and returns it as a job module. */
async function writeTestModule(model: { readonly config: ModelConfig; readonly fingerprint: BaseModelFingerprint }, root: string): Promise<JobModule> {
  const dir = path.join(root, 'm');
  const { config, fingerprint } = model;
  const module = createInducerModule(config, fingerprint, { keyRank: 4, valueRank: 8, loraQ: null }, { init: 'default', seed: 1 });
  // The default init leaves the value up-projection at zero, so the module would not change the
  // output. Every tensor gets values in [-0.5, 0.5) from a linear congruential generator instead.
  let state = 12345;
  for (const tensor of module.tensors.values()) {
    for (let i = 0; i < tensor.data.length; i++) {
      state = (state * 1103515245 + 12345) % 2147483648;
      tensor.data[i] = state / 2147483648 - 0.5;
    }
  }
  await writeModule(dir, module);
  return { kind: 'adapter', key: 'tenant-a/m@1', dir };
}

describe('review: one module version loaded twice while a row still runs', () => {
  let backend: WorkerBackend;
  let root: string;
  let module: JobModule;

  before(async () => {
    // One slot, and a cache too small to keep any module, so every cache lookup loads a new copy.
    backend = await createWorkerBackend({ modelDir: MODEL_DIR, slotCapacity: 1, cacheBytes: 1, maxBatchSize: 4, intraOpThreads: 1 });
    root = await mkdtemp(path.join(tmpdir(), 'review-test-'));
    module = await writeTestModule(backend.model, root);
  });
  after(async () => {
    await backend?.shutdown(1000);
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('second copy of a running version shares its slot', async () => {
    const alone = await run(backend, makeJob({ module, maxNewTokens: 20 }));
    assert.equal(alone.end.type, 'done', `job alone: ${endSummary(alone)}`);

    // The second job arrives after the first one's module load finished, so its lookup loads
    // another copy of the same version. Both copies are the one module of the batch.
    let second: Promise<JobResult> | null = null;
    const first = await run(backend, makeJob({ module, maxNewTokens: 40 }), (count) => {
      if (count === 2) second = run(backend, makeJob({ module, maxNewTokens: 20 }));
    });
    assert.ok(second !== null, 'the second job was submitted');
    const secondResult = await (second as Promise<JobResult>);
    assert.equal(first.end.type, 'done', `first job: ${endSummary(first)}`);
    assert.equal(secondResult.end.type, 'done', `second job: ${endSummary(secondResult)}`);
    // Greedy decoding with the same module and prompt gives the same tokens as the job alone.
    assert.deepEqual(secondResult.tokens, alone.tokens);
    assert.deepEqual(first.tokens.slice(0, 20), alone.tokens);
  });
});

/** Runs `jobs` through an in-process engine loop and returns each job's tokens and last event. */
async function runLoop(loop: EngineLoop, port: MessagePort, jobs: readonly CompletionJob[]): Promise<Map<string, JobResult>> {
  const results = new Map<string, JobResult>();
  const tokens = new Map<string, number[]>(jobs.map((job) => [job.id, []]));
  const finished = new Promise<void>((resolve) => {
    port.on('message', (message: WorkerMessage) => {
      if (message.type !== 'event') return;
      const event = message.event;
      if (event.type === 'token') tokens.get(event.jobId)?.push(event.tokenId);
      else if (event.type === 'done' || event.type === 'error') {
        results.set(event.jobId, { tokens: tokens.get(event.jobId) ?? [], end: event });
        if (results.size === jobs.length) resolve();
      }
    });
  });
  const running = loop.run();
  for (const job of jobs) loop.handle({ type: 'submit', job });
  await finished;
  loop.handle({ type: 'shutdown', deadlineMs: 0 });
  await running;
  return results;
}

describe('review: module eviction during a step', () => {
  let model: LoadedModel;
  let root: string;
  let module: JobModule;

  before(async () => {
    model = await loadModel(MODEL_DIR, { slotCapacity: 2, intraOpThreads: 1 });
    root = await mkdtemp(path.join(tmpdir(), 'review-test-'));
    module = await writeTestModule(model, root);
  });
  after(async () => {
    await model?.engine.dispose();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('eviction during a forward call', async () => {
    const settings: EngineWorkerSettings = { modelDir: MODEL_DIR, slotCapacity: 2, maxBatchSize: 4, maxQueue: 8, maxBatchTokens: 2048, cacheBytes: 1 << 26 };
    const maxNewTokens = 30;
    const key = module.kind === 'adapter' ? module.key : '';
    const forward = model.engine.forward.bind(model.engine);
    try {
      const plain = async (job: CompletionJob): Promise<JobResult> => {
        const channel = new MessageChannel();
        const results = await runLoop(new EngineLoop(model, settings, channel.port1), channel.port2, [job]);
        channel.port1.close();
        return results.get(job.id) as JobResult;
      };
      const base = await plain(makeJob({ maxNewTokens }));
      const alone = await plain(makeJob({ module, maxNewTokens }));
      assert.equal(alone.end.type, 'done', `job alone: ${endSummary(alone)}`);
      assert.notDeepEqual(alone.tokens, base.tokens, 'precondition: the module changes the greedy output');

      // An eviction message (the store retired the version) is handled while the third forward
      // call is in progress, as the worker's message handler can be between the call and its result.
      const channel = new MessageChannel();
      const loop = new EngineLoop(model, settings, channel.port1);
      let numCalls = 0;
      model.engine.forward = (input) => {
        const result = forward(input);
        numCalls += 1;
        if (numCalls === 3) loop.handle({ type: 'evict', key });
        return result;
      };
      const job = makeJob({ module, maxNewTokens });
      const evicted = (await runLoop(loop, channel.port2, [job])).get(job.id) as JobResult;
      channel.port1.close();
      assert.ok(numCalls >= 3, 'the eviction happened during a step');
      assert.equal(evicted.end.type, 'done', `job with an eviction: ${endSummary(evicted)}`);
      assert.deepEqual(evicted.tokens, alone.tokens);
    } finally {
      model.engine.forward = forward;
    }
  });
});
