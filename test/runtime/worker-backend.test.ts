/**
 * The worker backend on the real stories260k checkpoint: continuous batching must give each job
 * the result it gets alone, and jobs must end properly on every path (stop token, module load
 * failure, cancellation, full queue, shutdown, worker crash). Backends run one at a time,
 * because onnxruntime-node should be loaded by one worker per process.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeModule } from '../../src/adapters/module-files.js';
import { createInducerModule } from '../../src/adapters/module.js';
import { QueueFullError, type BackendObserver, type CompletionJob, type JobEvent, type JobModule } from '../../src/runtime/backend.js';
import { createWorkerBackend, type WorkerBackend } from '../../src/runtime/worker-backend.js';
import { maxAbsDifference } from '../helpers/compare.js';

const MODEL_DIR = path.resolve('..', 'shared', 'models', 'stories260k');
const TOLERANCE = 1e-4;
const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };
const BOS = 1;
const EOS = 2;
/** Greedy continuation of BOS alone, from the model's README: "Once upon a time, there was a little girl named Lily." */
const README_GREEDY_START = [403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426];

interface JobResult {
  readonly tokens: number[];
  readonly logprobs: number[];
  readonly topLogprobs: (readonly { tokenId: number; logprob: number }[] | undefined)[];
  promptLogprobs: readonly number[] | null;
  readonly end: Extract<JobEvent, { type: 'done' | 'error' }>;
}

/** Submits a job and collects its events; `onToken` is called with the token count after each token. */
function run(backend: WorkerBackend, job: CompletionJob, onToken?: (count: number) => void): Promise<JobResult> {
  return new Promise((resolve) => {
    const tokens: number[] = [];
    const logprobs: number[] = [];
    const topLogprobs: JobResult['topLogprobs'] = [];
    let promptLogprobs: readonly number[] | null = null;
    backend.submit(job, (event) => {
      assert.equal(event.jobId, job.id);
      if (event.type === 'token') {
        tokens.push(event.tokenId);
        logprobs.push(event.logprob);
        topLogprobs.push(event.topLogprobs);
        onToken?.(tokens.length);
      } else if (event.type === 'prompt_logprobs') {
        promptLogprobs = event.logprobs;
      } else {
        resolve({ tokens, logprobs, topLogprobs, promptLogprobs, end: event });
      }
    });
  });
}

let nextJobNumber = 0;

function makeJob(fields: Partial<CompletionJob> & { promptIds: readonly number[] }): CompletionJob {
  nextJobNumber += 1;
  return {
    id: `job-${nextJobNumber}`,
    tenant: 'tenant-a',
    module: { kind: 'base' },
    sampling: GREEDY,
    maxNewTokens: 10,
    stopTokenIds: [],
    topLogprobs: 0,
    promptLogprobs: false,
    ...fields,
  };
}

function assertSameResult(got: JobResult, want: JobResult, label: string): void {
  assert.deepEqual(got.tokens, want.tokens, `${label}: tokens`);
  const difference = maxAbsDifference(got.logprobs, want.logprobs);
  assert.ok(difference < TOLERANCE, `${label}: logprobs differ by ${difference}`);
  assert.equal(got.end.type, 'done');
  assert.equal(want.end.type, 'done');
}

describe('worker backend: batching', () => {
  let backend: WorkerBackend;
  let moduleRoot: string;
  const modules: Record<'a' | 'b' | 'c', JobModule> = {} as Record<'a' | 'b' | 'c', JobModule>;
  const steps: { kind: string; numRows: number }[] = [];
  const cacheEvents: string[] = [];
  const queueDepths: number[] = [];
  let modelLoad: { seconds: number; numParameters: number } | null = null;

  before(async () => {
    const observer: BackendObserver = {
      onStep: (kind, numRows) => steps.push({ kind, numRows }),
      onModuleCache: (event) => cacheEvents.push(event.kind),
      onQueueDepth: (n) => queueDepths.push(n),
      onModelLoaded: (seconds, numParameters) => {
        modelLoad = { seconds, numParameters };
      },
    };
    // Two slots for three modules, so admission has to respect the slot limit.
    backend = await createWorkerBackend({ modelDir: MODEL_DIR, slotCapacity: 2, maxBatchSize: 8, intraOpThreads: 1 }, observer);
    moduleRoot = await mkdtemp(path.join(tmpdir(), 'worker-backend-test-'));
    const { config, fingerprint } = backend.model;
    const settings = [
      { name: 'a', hp: { keyRank: 4, valueRank: 8, loraQ: null }, seed: 1 },
      { name: 'b', hp: { keyRank: 0, valueRank: 16, loraQ: { rank: 2, alpha: 4, bias: true } }, seed: 2 },
      { name: 'c', hp: { keyRank: 2, valueRank: 2, loraQ: null }, seed: 3 },
    ] as const;
    for (const { name, hp, seed } of settings) {
      const dir = path.join(moduleRoot, name);
      await writeModule(dir, createInducerModule(config, fingerprint, hp, { init: 'default', seed }));
      modules[name] = { kind: 'adapter', key: `tenant-${name}/${name}@1`, dir };
    }
  });
  after(async () => {
    await backend?.shutdown(1000);
    if (moduleRoot) await rm(moduleRoot, { recursive: true, force: true });
  });

  it('reports the loaded model', () => {
    assert.equal(backend.model.id, 'stories260k');
    assert.equal(backend.model.config.vocabSize, 512);
    assert.equal(backend.model.fingerprint.weights_sha256.length, 64);
    assert.ok(modelLoad !== null, 'onModelLoaded was called');
    assert.ok(modelLoad.numParameters > 200_000, 'about 260k parameters');
    assert.ok(modelLoad.numParameters < 300_000, 'about 260k parameters');
    assert.deepEqual(backend.stats(), { ready: true, waitingJobs: 0, runningJobs: 0 });
  });

  it('generates the known greedy text and stops at a stop token', async () => {
    const plain = await run(backend, makeJob({ promptIds: [BOS], maxNewTokens: README_GREEDY_START.length }));
    assert.deepEqual(plain.tokens, README_GREEDY_START);
    assert.equal(plain.end.type === 'done' && plain.end.finishReason, 'length');
    assert.equal(plain.end.type === 'done' && plain.end.completionTokens, README_GREEDY_START.length);

    // 426 (".") first appears at index 14, so 14 tokens come before it.
    const stopped = await run(backend, makeJob({ promptIds: [BOS], maxNewTokens: 40, stopTokenIds: [EOS, 426] }));
    assert.deepEqual(stopped.tokens, README_GREEDY_START.slice(0, 14));
    assert.equal(stopped.end.type === 'done' && stopped.end.finishReason, 'eos');
    assert.equal(stopped.end.type === 'done' && stopped.end.promptTokens, 1);
  });

  it('gives each job its own result in a mixed batch', async () => {
    const prompt = [BOS, ...README_GREEDY_START.slice(0, 9)];
    const specs = [
      { module: { kind: 'base' } as JobModule, promptIds: prompt, maxNewTokens: 24, tenant: 't1' },
      { module: modules.a, promptIds: prompt, maxNewTokens: 20, tenant: 't2' },
      { module: modules.b, promptIds: [BOS], maxNewTokens: 30, tenant: 't3' },
      { module: modules.c, promptIds: [BOS, 403, 407], maxNewTokens: 16, tenant: 't2' },
      { module: modules.a, promptIds: [BOS, 261], maxNewTokens: 12, tenant: 't4' },
    ];
    const alone: JobResult[] = [];
    for (const spec of specs) alone.push(await run(backend, makeJob({ ...spec, stopTokenIds: [EOS] })));

    // The modules change the output of the frozen model on the same prompt: module a its
    // greedy tokens, the others at least their log-probabilities by far more than the tolerance.
    assert.notDeepEqual(alone[1].tokens, alone[0].tokens, 'module a changes the greedy continuation');
    for (let i = 2; i < specs.length; i++) {
      const base = await run(backend, makeJob({ ...specs[i], module: { kind: 'base' }, stopTokenIds: [EOS] }));
      const changedTokens = base.tokens.join() !== alone[i].tokens.join();
      const numCompared = Math.min(base.logprobs.length, alone[i].logprobs.length);
      const difference = maxAbsDifference(base.logprobs.slice(0, numCompared), alone[i].logprobs.slice(0, numCompared));
      assert.ok(changedTokens || difference > 10 * TOLERANCE, `job ${i}: its module changed logprobs by only ${difference}`);
    }

    // Concurrently: two jobs start, the others join while those are decoding.
    const stepsBefore = steps.length;
    const together: Promise<JobResult>[] = [];
    let joined = false;
    const joinLater = (count: number): void => {
      if (count !== 5 || joined) return;
      joined = true;
      for (const spec of specs.slice(2)) together.push(run(backend, makeJob({ ...spec, stopTokenIds: [EOS] })));
    };
    together.push(run(backend, makeJob({ ...specs[0], stopTokenIds: [EOS] }), joinLater));
    together.push(run(backend, makeJob({ ...specs[1], stopTokenIds: [EOS] })));
    const firstTwo = await Promise.all(together.slice(0, 2));
    assert.equal(together.length, specs.length, 'the later jobs were submitted while the first ran');
    const results = [...firstTwo, ...(await Promise.all(together.slice(2)))];
    results.forEach((result, i) => assertSameResult(result, alone[i], `job ${i}`));

    const decodeRows = steps.slice(stepsBefore).filter((s) => s.kind === 'decode').map((s) => s.numRows);
    assert.ok(Math.max(...decodeRows) >= 3, `some decode step ran several jobs at once (rows per step: ${decodeRows.join(', ')})`);
  });

  it('returns prompt logprobs that match cached decoding', async () => {
    const generated = await run(backend, makeJob({ module: modules.a, promptIds: [BOS, 403], maxNewTokens: 8, topLogprobs: 3 }));
    // Scoring prompt + generated tokens recomputes what decoding produced step by step.
    const scored = await run(
      backend,
      makeJob({ module: modules.a, promptIds: [BOS, 403, ...generated.tokens], maxNewTokens: 0, promptLogprobs: true }),
    );
    assert.equal(scored.end.type === 'done' && scored.end.finishReason, 'length');
    assert.equal(scored.tokens.length, 0);
    const promptLogprobs = scored.promptLogprobs as readonly number[];
    assert.equal(promptLogprobs.length, 2 + generated.tokens.length - 1);
    const difference = maxAbsDifference(promptLogprobs.slice(1), generated.logprobs);
    assert.ok(difference < TOLERANCE, `prompt logprobs differ from decoding logprobs by ${difference}`);
    assert.ok(promptLogprobs.every((lp) => lp <= 0));

    generated.topLogprobs.forEach((top, i) => {
      assert.ok(top !== undefined, `token ${i} has top logprobs`);
      assert.equal(top.length, 3);
      assert.equal(top[0].tokenId, generated.tokens[i], 'greedy picks the most likely token');
      assert.ok(Math.abs(top[0].logprob - generated.logprobs[i]) < 1e-9);
      assert.ok(top[0].logprob >= top[1].logprob, 'alternatives are sorted');
      assert.ok(top[1].logprob >= top[2].logprob, 'alternatives are sorted');
    });
  });

  it('ends only the job whose module fails to load', async () => {
    const missing: JobModule = { kind: 'adapter', key: 'tenant-x/missing@1', dir: path.join(moduleRoot, 'missing') };
    const wrongModelDir = path.join(moduleRoot, 'wrong-model');
    const fingerprint = { ...backend.model.fingerprint, weights_sha256: '0'.repeat(64) };
    await writeModule(wrongModelDir, createInducerModule(backend.model.config, fingerprint, { keyRank: 2, valueRank: 2, loraQ: null }, { init: 'default', seed: 9 }));
    const wrongModel: JobModule = { kind: 'adapter', key: 'tenant-x/wrong@1', dir: wrongModelDir };

    const [failedMissing, failedWrong, fine] = await Promise.all([
      run(backend, makeJob({ module: missing, promptIds: [BOS] })),
      run(backend, makeJob({ module: wrongModel, promptIds: [BOS] })),
      run(backend, makeJob({ promptIds: [BOS], maxNewTokens: 5 })),
    ]);
    assert.equal(failedMissing.end.type, 'error');
    assert.equal(failedMissing.end.type === 'error' && failedMissing.end.status, 404);
    assert.equal(failedMissing.end.type === 'error' && failedMissing.end.code, 'module_not_found');
    assert.match(failedMissing.end.type === 'error' ? failedMissing.end.message : '', /tenant-x\/missing@1/);
    assert.equal(failedWrong.end.type === 'error' && failedWrong.end.status, 422);
    assert.equal(failedWrong.end.type === 'error' && failedWrong.end.code, 'module_incompatible');
    assert.deepEqual(fine.tokens, README_GREEDY_START.slice(0, 5));

    const after = await run(backend, makeJob({ module: modules.a, promptIds: [BOS], maxNewTokens: 3 }));
    assert.equal(after.end.type, 'done', 'the backend keeps serving');
  });

  it('rejects jobs that exceed the context', async () => {
    const result = await run(backend, makeJob({ promptIds: [BOS], maxNewTokens: 600 }));
    assert.equal(result.end.type === 'error' && result.end.status, 400);
    assert.equal(result.end.type === 'error' && result.end.code, 'context_length_exceeded');
  });

  it('reports steps, module cache use and queue depth', async () => {
    assert.ok(steps.some((s) => s.kind === 'prefill'));
    assert.ok(steps.some((s) => s.kind === 'decode'));
    assert.ok(cacheEvents.includes('miss'));
    assert.ok(cacheEvents.includes('hit'));
    assert.ok(queueDepths.length > 0 && queueDepths.every((n) => n >= 0));
    assert.equal(queueDepths.at(-1), 0);
    backend.evictModule(modules.a.kind === 'adapter' ? modules.a.key : '');
    await run(backend, makeJob({ module: modules.a, promptIds: [BOS], maxNewTokens: 1 }));
    assert.ok(cacheEvents.includes('eviction'), 'evictModule drops the cached copy');
    assert.equal(cacheEvents.at(-1), 'miss', 'the next job loads the module again');
  });
});

describe('worker backend: queue, cancellation and shutdown', () => {
  let backend: WorkerBackend;

  before(async () => {
    backend = await createWorkerBackend({ modelDir: MODEL_DIR, maxBatchSize: 1, maxQueue: 2, intraOpThreads: 1 });
  });
  after(async () => {
    await backend?.shutdown(0);
  });

  it('throws QueueFullError beyond the queue limit and cancels waiting and running jobs', async () => {
    const runningJob = makeJob({ promptIds: [BOS], maxNewTokens: 400 });
    const runningDone = run(backend, runningJob, (count) => {
      if (count === 3) backend.cancel(runningJob.id);
    });
    const waitingJob = makeJob({ promptIds: [BOS], maxNewTokens: 5 });
    const waitingDone = run(backend, waitingJob);
    // Both jobs count as waiting until the worker reports admission, so the queue (2) is full.
    assert.throws(() => backend.submit(makeJob({ promptIds: [BOS] }), () => undefined), QueueFullError);

    const started = performance.now();
    backend.cancel(waitingJob.id);
    const waitingResult = await waitingDone;
    assert.equal(waitingResult.end.type === 'done' && waitingResult.end.finishReason, 'cancelled');
    assert.equal(waitingResult.tokens.length, 0);

    const runningResult = await runningDone;
    assert.equal(runningResult.end.type === 'done' && runningResult.end.finishReason, 'cancelled');
    assert.equal(runningResult.tokens.length, 3, 'no tokens are delivered after cancel');
    assert.equal(runningResult.end.type === 'done' && runningResult.end.completionTokens, 3);
    assert.ok(performance.now() - started < 5000, 'cancellation is prompt');
    assert.deepEqual(backend.stats(), { ready: true, waitingJobs: 0, runningJobs: 0 });
  });

  it('finishes short jobs and cancels the rest at shutdown', async () => {
    const short = run(backend, makeJob({ promptIds: [BOS], maxNewTokens: 3 }));
    const long = makeJob({ promptIds: [BOS], maxNewTokens: 500 - 1 });
    const longDone = run(backend, long);
    await short;
    // The long job of 499 steps is now running; shutdown gives it 300 ms.
    const started = performance.now();
    await backend.shutdown(300);
    const elapsed = performance.now() - started;
    const [shortResult, longResult] = await Promise.all([short, longDone]);
    assert.equal(shortResult.end.type === 'done' && shortResult.end.finishReason, 'length');
    assert.equal(longResult.end.type === 'done' && longResult.end.finishReason, 'cancelled');
    assert.ok(elapsed < 3000, `shutdown took ${elapsed} ms`);
    assert.equal(backend.stats().ready, false);

    const rejected = await run(backend, makeJob({ promptIds: [BOS] }));
    assert.equal(rejected.end.type === 'error' && rejected.end.status, 503);
  });
});

describe('worker backend: crash', () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'worker-crash-test-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('ends every job with an error when the worker dies', async () => {
    // A worker entry that runs the real engine worker and throws an uncaught error after the third token.
    const engineWorker = new URL('../../src/runtime/engine-worker.js', import.meta.url).href;
    const entry = path.join(dir, 'crashing-worker.mjs');
    await writeFile(
      entry,
      [
        "import { parentPort } from 'node:worker_threads';",
        'const post = parentPort.postMessage.bind(parentPort);',
        'let numTokens = 0;',
        'parentPort.postMessage = (message) => {',
        '  post(message);',
        "  if (message.type === 'event' && message.event.type === 'token' && ++numTokens === 3) {",
        "    setImmediate(() => { throw new Error('simulated engine crash'); });",
        '  }',
        '};',
        `await import(${JSON.stringify(engineWorker)});`,
      ].join('\n'),
    );
    const backend = await createWorkerBackend({ modelDir: MODEL_DIR, maxBatchSize: 1, workerUrl: new URL(`file://${entry}`), intraOpThreads: 1 });
    try {
      const results = await Promise.all([
        run(backend, makeJob({ promptIds: [BOS], maxNewTokens: 400 })),
        run(backend, makeJob({ promptIds: [BOS], maxNewTokens: 400 })),
      ]);
      for (const result of results) {
        assert.equal(result.end.type, 'error');
        assert.equal(result.end.type === 'error' && result.end.status, 500);
        assert.match(result.end.type === 'error' ? result.end.message : '', /simulated engine crash/);
      }
      assert.equal(backend.stats().ready, false);
      const later = await run(backend, makeJob({ promptIds: [BOS] }));
      assert.equal(later.end.type === 'error' && later.end.status, 503);
    } finally {
      await backend.shutdown(0);
    }
  });
});
