/**
 * Recovery of the worker backend on the real stories260k checkpoint: a failed engine step ends
 * only its own jobs, and a crashed worker is replaced by a new one, within a bounded number of
 * restarts. Each test runs the real engine worker through a small wrapper entry that counts its
 * starts in a file and injects one fault. Backends run one at a time, because onnxruntime-node
 * should be loaded by one worker per process.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeModule } from '../../src/adapters/module-files.js';
import { createInducerModule } from '../../src/adapters/module.js';
import type { BackendObserver, CompletionJob, EngineStatusEvent, JobEvent } from '../../src/runtime/backend.js';
import { createWorkerBackend, type WorkerBackend, type WorkerBackendOptions } from '../../src/runtime/worker-backend.js';

const MODEL_DIR = path.resolve('..', 'shared', 'models', 'stories260k');
const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };
const BOS = 1;
/** Greedy continuation of BOS alone, from the model's README: "Once upon a time, there was a little girl named Lily." */
const README_GREEDY_START = [403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426];
const FAST_RESTARTS = { initialDelayMs: 50, maxDelayMs: 200 };

const ENGINE_WORKER = new URL('../../src/runtime/engine-worker.js', import.meta.url).href;
const SLOT_TABLE = new URL('../../src/runtime/slot-table.js', import.meta.url).href;
const BATCH_STATE = new URL('../../src/runtime/batch-state.js', import.meta.url).href;

interface JobResult {
  readonly tokens: number[];
  readonly end: Extract<JobEvent, { type: 'done' | 'error' }>;
}

function run(backend: WorkerBackend, job: CompletionJob, onToken?: (count: number) => void): Promise<JobResult> {
  return new Promise((resolve) => {
    const tokens: number[] = [];
    backend.submit(job, (event) => {
      if (event.type === 'token') {
        tokens.push(event.tokenId);
        onToken?.(tokens.length);
      } else if (event.type !== 'prompt_logprobs') {
        resolve({ tokens, end: event });
      }
    });
  });
}

let nextJobNumber = 0;

function makeJob(fields: Partial<CompletionJob> = {}): CompletionJob {
  nextJobNumber += 1;
  return {
    id: `restart-job-${nextJobNumber}`,
    tenant: 'tenant-a',
    module: { kind: 'base' },
    promptIds: [BOS],
    sampling: GREEDY,
    maxNewTokens: 5,
    stopTokenIds: [],
    topLogprobs: 0,
    promptLogprobs: false,
    ...fields,
  };
}

function errorOf(result: JobResult): Extract<JobEvent, { type: 'error' }> {
  assert.equal(result.end.type, 'error', `job ended with ${JSON.stringify(result.end)}`);
  return result.end as Extract<JobEvent, { type: 'error' }>;
}

/**
 * Writes a worker entry that appends one line to `startsFile` per start, runs `perStart` (the
 * body of a function of `starts`, the number of starts so far) and then imports the real worker.
 */
async function writeEntry(dir: string, name: string, perStart: string[]): Promise<{ url: URL; starts: () => number }> {
  const entry = path.join(dir, `${name}.mjs`);
  const startsFile = path.join(dir, `${name}.starts`);
  await writeFile(startsFile, '');
  await writeFile(
    entry,
    [
      "import { appendFileSync, readFileSync } from 'node:fs';",
      "import { parentPort } from 'node:worker_threads';",
      `appendFileSync(${JSON.stringify(startsFile)}, 'start\\n');`,
      `const starts = readFileSync(${JSON.stringify(startsFile)}, 'utf8').split('\\n').length - 1;`,
      ...perStart,
      `await import(${JSON.stringify(ENGINE_WORKER)});`,
    ].join('\n'),
  );
  return { url: new URL(`file://${entry}`), starts: () => readFileSync(startsFile, 'utf8').split('\n').length - 1 };
}

/** Lines that make the first start throw an uncaught error after its third token. */
const CRASH_FIRST_START_AFTER_THREE_TOKENS = [
  'if (starts === 1) {',
  '  const post = parentPort.postMessage.bind(parentPort);',
  '  let numTokens = 0;',
  '  parentPort.postMessage = (message) => {',
  '    post(message);',
  "    if (message.type === 'event' && message.event.type === 'token' && ++numTokens === 3) {",
  "      setImmediate(() => { throw new Error('simulated engine crash'); });",
  '    }',
  '  };',
  '}',
];

/** Resolves when `condition` holds, checking every 10 ms; fails after `timeoutMs`. */
async function waitFor(condition: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const started = performance.now();
  while (!condition()) {
    if (performance.now() - started > timeoutMs) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

async function startBackend(url: URL, observer: BackendObserver, extra: Partial<WorkerBackendOptions> = {}): Promise<WorkerBackend> {
  return createWorkerBackend({ modelDir: MODEL_DIR, maxBatchSize: 4, intraOpThreads: 1, workerUrl: url, ...extra }, observer);
}

describe('worker backend: failed steps', () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'worker-step-test-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('ends only the prefill jobs when slot assignment fails', async () => {
    // The first call that places a module fails, as a full slot table would.
    const { url, starts } = await writeEntry(dir, 'slots', [
      `const { SlotTable, SlotCapacityError } = await import(${JSON.stringify(SLOT_TABLE)});`,
      'const slotsFor = SlotTable.prototype.slotsFor;',
      'let failed = false;',
      'SlotTable.prototype.slotsFor = function (modules) {',
      '  if (!failed && modules.some((m) => m !== null)) {',
      '    failed = true;',
      "    throw new SlotCapacityError('simulated slot failure');",
      '  }',
      '  return slotsFor.call(this, modules);',
      '};',
    ]);
    const statuses: EngineStatusEvent[] = [];
    const backend = await startBackend(url, { onEngineStatus: (event) => statuses.push(event) });
    try {
      const moduleDir = path.join(dir, 'module-a');
      const { config, fingerprint } = backend.model;
      await writeModule(moduleDir, createInducerModule(config, fingerprint, { keyRank: 2, valueRank: 4, loraQ: null }, { init: 'default', seed: 1 }));
      const module = { kind: 'adapter', key: 'tenant-a/a@1', dir: moduleDir } as const;

      // The base job is decoding when the module job joins, so the failing prefill runs next to it.
      const joined: Promise<JobResult>[] = [];
      const moduleJob = makeJob({ module });
      const baseDone = run(backend, makeJob({ maxNewTokens: README_GREEDY_START.length }), (count) => {
        if (count === 3) joined.push(run(backend, moduleJob));
      });
      const base = await baseDone;
      assert.equal(joined.length, 1, 'the module job was submitted while the base job ran');
      const failed = errorOf(await joined[0]);

      assert.equal(failed.status, 500);
      assert.equal(failed.code, 'engine_error');
      assert.match(failed.message, new RegExp(`job ${moduleJob.id} failed in prefill: simulated slot failure`));
      assert.equal(base.end.type, 'done', 'the running job goes on');
      assert.deepEqual(base.tokens, README_GREEDY_START);

      const retried = await run(backend, makeJob({ module }));
      assert.equal(retried.end.type, 'done', 'the module job succeeds on retry');
      assert.equal(retried.tokens.length, 5);
      assert.equal(starts(), 1, 'the worker did not restart');
      assert.deepEqual(statuses, []);
      assert.equal(backend.stats().ready, true);
    } finally {
      await backend.shutdown(0);
    }
  });

  it('resets the batch when a merge fails', async () => {
    // The first merge into a non-empty batch fails.
    const { url, starts } = await writeEntry(dir, 'merge', [
      `const { BatchState } = await import(${JSON.stringify(BATCH_STATE)});`,
      'const merge = BatchState.prototype.merge;',
      'let failed = false;',
      'BatchState.prototype.merge = function (rows, cache) {',
      '  if (!failed && this.size > 0) {',
      '    failed = true;',
      "    throw new Error('simulated merge failure');",
      '  }',
      '  return merge.call(this, rows, cache);',
      '};',
    ]);
    const backend = await startBackend(url, {});
    try {
      const runningJob = makeJob({ maxNewTokens: 40 });
      const joiningJob = makeJob({ promptIds: [BOS, 403] });
      const joined: Promise<JobResult>[] = [];
      const running = await run(backend, runningJob, (count) => {
        if (count === 3) joined.push(run(backend, joiningJob));
      });
      const joining = await joined[0];

      for (const [result, job] of [
        [running, runningJob],
        [joining, joiningJob],
      ] as const) {
        const error = errorOf(result);
        assert.equal(error.status, 500);
        assert.equal(error.code, 'engine_error');
        assert.match(error.message, new RegExp(`job ${job.id} failed in the merge of new rows into the running batch`));
        assert.match(error.message, /simulated merge failure/);
      }
      assert.ok(running.tokens.length >= 3, `the running job had its tokens before the merge (${running.tokens.length})`);
      assert.ok(running.tokens.length < 40, `the running job stopped early (${running.tokens.length} tokens)`);

      // Two jobs started together after the reset give the known greedy tokens.
      const [first, second] = await Promise.all([
        run(backend, makeJob({ maxNewTokens: README_GREEDY_START.length })),
        run(backend, makeJob({ promptIds: [BOS, ...README_GREEDY_START.slice(0, 5)], maxNewTokens: 6 })),
      ]);
      assert.deepEqual(first.tokens, README_GREEDY_START);
      assert.deepEqual(second.tokens, README_GREEDY_START.slice(5, 11));
      assert.equal(starts(), 1, 'the worker did not restart');
    } finally {
      await backend.shutdown(0);
    }
  });
});

describe('worker backend: restarts', () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'worker-restart-test-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('serves again after a crash', async () => {
    const { url, starts } = await writeEntry(dir, 'recover', CRASH_FIRST_START_AFTER_THREE_TOKENS);
    const statuses: EngineStatusEvent[] = [];
    let numModelLoads = 0;
    const backend = await startBackend(
      url,
      {
        onEngineStatus: (event) => statuses.push(event),
        onModelLoaded: () => {
          numModelLoads += 1;
        },
      },
      // A long first wait leaves time to submit a job during the restart.
      { restart: { initialDelayMs: 500, maxDelayMs: 1000 } },
    );
    try {
      const crashed = await run(backend, makeJob({ maxNewTokens: 400 }));
      const crashError = errorOf(crashed);
      assert.equal(crashError.status, 500);
      assert.equal(crashError.code, 'engine_crashed');
      assert.match(crashError.message, /simulated engine crash/);
      assert.equal(backend.stats().ready, false, 'not ready while restarting');

      const rejected = errorOf(await run(backend, makeJob()));
      assert.equal(rejected.status, 503);
      assert.equal(rejected.code, 'engine_unavailable');
      assert.match(rejected.message, /restarting after a crash/);
      assert.equal(typeof rejected.retryAfterSeconds, 'number');
      assert.ok((rejected.retryAfterSeconds ?? 0) >= 1, `retry hint ${rejected.retryAfterSeconds}`);

      await waitFor(() => backend.stats().ready, 'the restarted backend to be ready');
      assert.equal(starts(), 2);
      assert.equal(numModelLoads, 2, 'onModelLoaded fires at start and after the restart');
      assert.deepEqual(
        statuses.map((s) => [s.kind, s.attempt]),
        [
          ['crashed', 0],
          ['restarting', 1],
          ['restarted', 1],
        ],
      );
      assert.equal(backend.model.id, 'stories260k');

      const served = await run(backend, makeJob({ maxNewTokens: README_GREEDY_START.length }));
      assert.equal(served.end.type, 'done');
      assert.deepEqual(served.tokens, README_GREEDY_START);
      assert.deepEqual(backend.stats(), { ready: true, waitingJobs: 0, runningJobs: 0 });
    } finally {
      await backend.shutdown(0);
    }
  });

  it('gives up after the restart limit', async () => {
    // The first start crashes after three tokens; every later start throws before loading the model.
    const { url, starts } = await writeEntry(dir, 'always-crash', [
      ...CRASH_FIRST_START_AFTER_THREE_TOKENS,
      "if (starts > 1) throw new Error('simulated start failure');",
    ]);
    const statuses: EngineStatusEvent[] = [];
    const backend = await startBackend(url, { onEngineStatus: (event) => statuses.push(event) }, { restart: { ...FAST_RESTARTS, maxAttempts: 2 } });
    try {
      errorOf(await run(backend, makeJob({ maxNewTokens: 400 })));
      await waitFor(() => statuses.some((s) => s.kind === 'gave_up'), 'the backend to give up');
      // Longer than the maximum delay, so a further start would have begun.
      await sleep(4 * FAST_RESTARTS.maxDelayMs);

      assert.equal(starts(), 3, 'the first start and two restarts');
      assert.deepEqual(
        statuses.map((s) => s.kind),
        ['crashed', 'restarting', 'restarting', 'gave_up'],
      );
      const gaveUp = statuses.at(-1) as EngineStatusEvent;
      assert.match(gaveUp.message, /2 restarts in a row failed/);
      assert.match(gaveUp.message, /simulated start failure/);
      assert.equal(backend.stats().ready, false);

      const rejected = errorOf(await run(backend, makeJob()));
      assert.equal(rejected.status, 503);
      assert.equal(rejected.code, 'engine_unavailable');
      assert.match(rejected.message, /not restarted any more/);
      assert.equal(rejected.retryAfterSeconds, undefined);
    } finally {
      await backend.shutdown(0);
    }
    assert.equal(starts(), 3);
  });

  it('shutdown while waiting to restart', async () => {
    const { url, starts } = await writeEntry(dir, 'shutdown-waiting', CRASH_FIRST_START_AFTER_THREE_TOKENS);
    const statuses: EngineStatusEvent[] = [];
    const backend = await startBackend(url, { onEngineStatus: (event) => statuses.push(event) }, { restart: { initialDelayMs: 300 } });
    errorOf(await run(backend, makeJob({ maxNewTokens: 400 })));
    assert.deepEqual(
      statuses.map((s) => s.kind),
      ['crashed', 'restarting'],
    );

    const started = performance.now();
    await backend.shutdown(0);
    assert.ok(performance.now() - started < 1000, 'shutdown does not wait for the restart');
    await sleep(600);
    assert.equal(starts(), 1, 'no worker starts after shutdown');
    assert.equal(backend.stats().ready, false);
    const rejected = errorOf(await run(backend, makeJob()));
    assert.equal(rejected.code, 'shutting_down');
  });

  it('shutdown while the new worker loads', async () => {
    // Restarted workers wait 2 s before loading the model, so the shutdown comes during the start.
    const { url, starts } = await writeEntry(dir, 'shutdown-loading', [
      ...CRASH_FIRST_START_AFTER_THREE_TOKENS,
      'if (starts > 1) await new Promise((resolve) => setTimeout(resolve, 2000));',
    ]);
    const statuses: EngineStatusEvent[] = [];
    const backend = await startBackend(url, { onEngineStatus: (event) => statuses.push(event) }, { restart: FAST_RESTARTS });
    errorOf(await run(backend, makeJob({ maxNewTokens: 400 })));
    await waitFor(() => starts() === 2, 'the restarted worker to begin');

    const started = performance.now();
    await backend.shutdown(0);
    assert.ok(performance.now() - started < 1500, 'shutdown terminates the loading worker');
    await sleep(2500);
    assert.equal(starts(), 2, 'no worker starts after shutdown');
    assert.deepEqual(
      statuses.map((s) => s.kind),
      ['crashed', 'restarting'],
    );
    assert.equal(backend.stats().ready, false);
  });
});
