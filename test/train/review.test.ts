/**
 * Regression tests for trainer faults found in review: bucketing of large data sets, the
 * early-stopping flag of a run resumed at its last step, and option combinations that `inducer
 * train` accepted although they cannot work. Also checks that a data file with a byte-order mark
 * and CRLF line endings parses.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runTrainCommand, type SessionFactory, type TrainOptions } from '../../src/cli/train-command.js';
import { floatTensor, type HostTensor } from '../../src/model/tensor.js';
import type { TrainingCheckpoint } from '../../src/train/checkpoint.js';
import { parseJsonlRecords, planEpoch, type TrainingExample } from '../../src/train/data.js';
import { runTrainingLoop, type LoopSettings } from '../../src/train/loop.js';
import { inducerTensorShapes } from '../../src/tuning/inducer.js';
import { QuadraticSession } from './fake-session.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const STORIES = path.resolve(here, '../../../../shared/models/stories260k');

describe('planEpoch with large buckets', () => {
  it('buckets 200k examples without overflow', () => {
    const numExamples = 200_000;
    const batchSize = 4096;
    const lengths = Array.from({ length: numExamples }, (_, i) => ((i * 7919) % 97) + 1);
    const batches = planEpoch(lengths, 0, { batchSize, shuffle: true, seed: 0, bucketByLength: true });

    assert.equal(batches.length, Math.ceil(numExamples / batchSize));
    const seen = new Uint8Array(numExamples);
    for (const batch of batches) for (const index of batch) seen[index]++;
    assert.ok(seen.every((count) => count === 1), 'every example appears exactly once');
    // One bucket contains every example, so each batch is a run of the length-sorted order.
    for (const batch of batches) {
      for (let i = 1; i < batch.length; i++) assert.ok(lengths[batch[i - 1]] >= lengths[batch[i]], 'lengths fall within a batch');
    }
  });
});

describe('runTrainingLoop resumed at the last step', () => {
  const shapes = new Map<string, readonly number[]>([['w', [3]]]);
  const examples: TrainingExample[] = Array.from({ length: 4 }, (_, i) => ({ inputIds: [1, 10 + i], labels: [10 + i, -100], numTargetTokens: 1, line: i + 1 }));
  // Learning rate 0 keeps the parameters, so no evaluation improves on the first and patience
  // runs out exactly at the last evaluation (steps 0, 2, 4 and 6: three without improvement).
  const settings: LoopSettings = {
    batchSize: 2,
    shuffle: false,
    bucketByLength: false,
    seed: 1,
    totalSteps: 6,
    schedule: 'constant',
    learningRate: 0,
    warmupSteps: 0,
    adamw: { beta1: 0.9, beta2: 0.999, epsilon: 1e-6, weightDecay: 0 },
    maxGradNorm: 1,
    evalEvery: 2,
    earlyStoppingPatience: 3,
  };
  const params = (): Map<string, HostTensor> => new Map([['w', floatTensor([3], Float32Array.of(0.1, 0.2, 0.3))]]);

  it('reports the same stoppedEarly as the full run', async () => {
    const saved: TrainingCheckpoint[] = [];
    const full = await runTrainingLoop({
      session: new QuadraticSession(shapes),
      params: params(),
      trainExamples: examples,
      evalExamples: examples,
      padId: 0,
      settings,
      checkpointSettings: {},
      saveCheckpoint: async (checkpoint) => void saved.push(checkpoint),
    });
    assert.equal(full.state.step, 6);
    assert.equal(full.state.evalsWithoutImprovement, 3);
    assert.equal(full.stoppedEarly, false, 'the run reached its last step');

    const last = saved.at(-1) as TrainingCheckpoint;
    assert.equal(last.loop.step, 6);
    const resumed = await runTrainingLoop({
      session: new QuadraticSession(shapes),
      params: params(),
      trainExamples: examples,
      evalExamples: examples,
      padId: 0,
      settings,
      checkpointSettings: {},
      resume: last,
    });
    assert.equal(resumed.state.step, 6);
    assert.equal(resumed.stoppedEarly, false);
  });
});

describe('parseJsonlRecords with Windows text', () => {
  it('accepts a byte-order mark and CRLF', () => {
    const records = parseJsonlRecords('\uFEFF{"prompt": "p", "completion": "c"}\r\n{"text": "t"}\r\n', 'd.jsonl');
    assert.deepEqual(records, [
      { kind: 'completion', line: 1, prompt: 'p', completion: 'c' },
      { kind: 'text', line: 2, text: 't' },
    ]);
  });
});

describe('runTrainCommand option checks', () => {
  let dir: string;
  let trainFile: string;
  const quietStream = { write: () => true } as unknown as NodeJS.WritableStream;
  const fakeFactory: SessionFactory = async (config, _weights, hp) => new QuadraticSession(inducerTensorShapes(config, hp));

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'train-review-'));
    trainFile = path.join(dir, 'train.jsonl');
    const lines = ['Lily', 'Tom', 'Ben', 'Sue'].map((name) => JSON.stringify({ prompt: `${name} went`, completion: ' to the park.' }));
    await writeFile(trainFile, `${lines.join('\n')}\n`);
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  function options(overrides: Partial<TrainOptions>): TrainOptions {
    return {
      model: STORIES,
      data: trainFile,
      out: path.join(dir, 'out'),
      method: 'inducer',
      keyRank: 5,
      valueRank: 12,
      init: 'default',
      batchSize: 2,
      lr: 1e-3,
      weightDecay: 0,
      schedule: 'linear',
      labelSmoothing: 0.1,
      dropout: 0.1,
      shuffle: true,
      seed: 0,
      maxSteps: 4,
      ...overrides,
    };
  }

  const train = (overrides: Partial<TrainOptions>, explicit: string[]) =>
    runTrainCommand(options(overrides), { explicitOptions: new Set(explicit), createSession: fakeFactory, stderr: quietStream, interactive: false });

  const exists = (file: string): Promise<boolean> => stat(file).then(() => true, () => false);

  it('rejects warm-up as long as the run', async () => {
    const out = path.join(dir, 'long-warmup');
    await assert.rejects(train({ out, warmupSteps: 10 }, ['warmupSteps']), /--warmup-steps 10 is not below the run's 4 optimizer steps/);
    await assert.rejects(train({ out, warmupSteps: 4 }, ['warmupSteps']), /--warmup-steps 4 is not below/);
    assert.equal(await exists(out), false);
  });

  it('accepts warm-up shorter than the run', async () => {
    const report = await train({ out: path.join(dir, 'short-warmup'), warmupSteps: 3 }, ['warmupSteps']);
    assert.equal(report.hyper_parameters.warmup_steps, 3);
  });

  it('rejects early stopping without eval data', async () => {
    const out = path.join(dir, 'no-eval');
    await assert.rejects(train({ out, earlyStopping: 2 }, ['earlyStopping']), /--early-stopping needs --eval/);
    assert.equal(await exists(out), false);
  });
});
