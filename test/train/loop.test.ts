import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { floatTensor, type HostTensor } from '../../src/model/tensor.js';
import { readCheckpoint, writeCheckpoint, type TrainingCheckpoint } from '../../src/train/checkpoint.js';
import type { TrainingExample } from '../../src/train/data.js';
import { runTrainingLoop, TrainingInterruptedError, type LoopSettings, type StepReport } from '../../src/train/loop.js';
import { QuadraticSession, targetOf } from './fake-session.js';

const shapes = new Map<string, readonly number[]>([
  ['a', [2, 3]],
  ['b', [4]],
]);

/** Example i predicts the single target token 10 + i after BOS. */
function makeExamples(count: number, offset = 10): TrainingExample[] {
  return Array.from({ length: count }, (_, i) => ({
    inputIds: [1, offset + i],
    labels: [offset + i, -100],
    numTargetTokens: 1,
    line: i + 1,
  }));
}

function startParams(value = 0.05): Map<string, HostTensor> {
  const params = new Map<string, HostTensor>();
  for (const [name, shape] of shapes) params.set(name, floatTensor(shape, new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(value)));
  return params;
}

const settings: LoopSettings = {
  batchSize: 4,
  shuffle: true,
  bucketByLength: false,
  seed: 7,
  totalSteps: 30,
  schedule: 'linear',
  learningRate: 0.01,
  warmupSteps: 3,
  adamw: { beta1: 0.9, beta2: 0.999, epsilon: 1e-6, weightDecay: 0 },
  maxGradNorm: 1,
  evalEvery: 5,
  earlyStoppingPatience: null,
};

function flatten(params: ReadonlyMap<string, HostTensor>): number[] {
  return [...params.values()].flatMap((tensor) => [...tensor.data]);
}

async function run(overrides: Partial<LoopSettings> = {}, extra: Partial<Parameters<typeof runTrainingLoop>[0]> = {}) {
  const session = new QuadraticSession(shapes);
  const steps: StepReport[] = [];
  const params = startParams();
  const result = await runTrainingLoop({
    session,
    params,
    trainExamples: makeExamples(10),
    evalExamples: makeExamples(5, 40),
    padId: 0,
    settings: { ...settings, ...overrides },
    checkpointSettings: { test: true },
    onStep: (report) => void steps.push(report),
    ...extra,
  });
  return { result, steps, params, session };
}

describe('runTrainingLoop', () => {
  it('reports the loss of each batch before its update', async () => {
    const { steps, session } = await run({ totalSteps: 2 });
    // Parameters are all 0.05 before the first step, so the loss is the batch mean of ½ (0.05 − a(y))².
    const firstIds = session.stepCalls[0].batch.labels.map((row) => row[0]);
    const expected = firstIds.reduce((sum, id) => sum + 0.5 * (0.05 - targetOf(id)) ** 2, 0) / firstIds.length;
    assert.ok(Math.abs(steps[0].loss - expected) < 1e-9, `${steps[0].loss} vs ${expected}`);
    assert.equal(steps[0].learningRate, 0, 'warm-up starts at 0');
    assert.equal(steps[0].tokens, 8, 'four examples of two tokens');
  });

  it('visits every example once per epoch', async () => {
    const { session } = await run({ totalSteps: 6 });
    // 10 examples in batches of 4: 3 batches per epoch, so steps 0-2 are epoch 0 and 3-5 are epoch 1.
    const epochIds = (from: number) =>
      session.stepCalls.slice(from, from + 3).flatMap((call) => call.batch.inputIds.map((row) => row[1])).sort((a, b) => a - b);
    const all = Array.from({ length: 10 }, (_, i) => 10 + i);
    assert.deepEqual(epochIds(0), all);
    assert.deepEqual(epochIds(3), all);
  });

  it('lowers the loss toward the quadratic minimum', async () => {
    const { result, params } = await run({ totalSteps: 200, learningRate: 0.01, warmupSteps: 0 });
    // The minimum of the eval loss is at the mean eval target; train targets share the same a(y) cycle.
    const evalCurve = result.state.evalCurve;
    assert.ok(evalCurve[evalCurve.length - 1].loss < evalCurve[0].loss / 10, JSON.stringify(evalCurve.map((p) => p.loss)));
    const trainMean = makeExamples(10).reduce((sum, example) => sum + targetOf(example.labels[0]), 0) / 10;
    for (const value of flatten(params)) assert.ok(Math.abs(value - trainMean) < 0.005, `${value} vs ${trainMean}`);
  });

  it('reports perplexity as exp of the eval loss', async () => {
    const { result } = await run({ totalSteps: 5 });
    for (const point of result.state.evalCurve) assert.equal(point.perplexity, Math.exp(point.loss));
    assert.deepEqual(result.state.evalCurve.map((point) => point.step), [0, 5]);
  });

  it('gives the same parameters for the same seed', async () => {
    const first = await run();
    const second = await run();
    assert.deepEqual(flatten(second.params), flatten(first.params));
    const other = await run({ seed: 8 });
    assert.notDeepEqual(flatten(other.params), flatten(first.params));
  });

  it('stops early and keeps the best parameters', async () => {
    // The eval targets differ from the training targets, so training moves away from the eval
    // optimum: starting at the eval optimum, no evaluation improves on the untrained parameters.
    const evalExamples = makeExamples(5, 40).map((example) => ({ ...example, labels: [42, -100] }));
    const session = new QuadraticSession(shapes);
    const params = startParams(targetOf(42));
    const result = await runTrainingLoop({
      session,
      params,
      trainExamples: makeExamples(10).map((example) => ({ ...example, labels: [10, -100] })),
      evalExamples,
      padId: 0,
      settings: { ...settings, warmupSteps: 0, earlyStoppingPatience: 2, evalEvery: 3 },
      checkpointSettings: {},
    });
    assert.equal(result.stoppedEarly, true);
    assert.equal(result.state.step, 6, 'two evaluations without improvement after steps 3 and 6');
    assert.equal(result.selectedStep, 0);
    for (const value of flatten(result.selectedParams)) assert.equal(value, Math.fround(targetOf(42)));
    assert.notEqual(flatten(params)[0], Math.fround(targetOf(42)), 'the trained parameters moved');
  });

  it('resumes to the same losses and parameters', async () => {
    const full = await run();
    const dir = await mkdtemp(path.join(tmpdir(), 'loop-resume-'));
    try {
      const checkpointDir = path.join(dir, 'checkpoint');
      const controller = new AbortController();
      const firstSteps: StepReport[] = [];
      await assert.rejects(
        runTrainingLoop({
          session: new QuadraticSession(shapes),
          params: startParams(),
          trainExamples: makeExamples(10),
          evalExamples: makeExamples(5, 40),
          padId: 0,
          settings,
          checkpointSettings: { test: true },
          saveCheckpoint: (checkpoint: TrainingCheckpoint) => writeCheckpoint(checkpointDir, checkpoint),
          signal: controller.signal,
          onStep: (report) => {
            firstSteps.push(report);
            if (report.step === 13) controller.abort();
          },
        }),
        (error: unknown) => error instanceof TrainingInterruptedError && error.step === 13 && error.checkpointSaved,
      );

      const checkpoint = await readCheckpoint(checkpointDir);
      assert.equal(checkpoint.loop.step, 13);
      assert.deepEqual(checkpoint.settings, { test: true });
      const restSteps: StepReport[] = [];
      const params = startParams(0.3); // overwritten from the checkpoint
      const resumed = await runTrainingLoop({
        session: new QuadraticSession(shapes),
        params,
        trainExamples: makeExamples(10),
        evalExamples: makeExamples(5, 40),
        padId: 0,
        settings,
        checkpointSettings: { test: true },
        resume: checkpoint,
        onStep: (report) => void restSteps.push(report),
      });
      assert.deepEqual([...firstSteps, ...restSteps].map((s) => s.loss), full.steps.map((s) => s.loss));
      assert.deepEqual(flatten(params), flatten(full.params));
      assert.deepEqual(flatten(resumed.selectedParams), flatten(full.result.selectedParams));
      assert.deepEqual(resumed.state.evalCurve, full.result.state.evalCurve);
      assert.deepEqual(resumed.state.lossCurve, full.result.state.lossCurve);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('returns the last parameters without an eval set', async () => {
    const session = new QuadraticSession(shapes);
    const params = startParams();
    const result = await runTrainingLoop({
      session,
      params,
      trainExamples: makeExamples(10),
      evalExamples: null,
      padId: 0,
      settings: { ...settings, totalSteps: 4 },
      checkpointSettings: {},
    });
    assert.equal(result.selectedStep, 4);
    assert.deepEqual(flatten(result.selectedParams), flatten(params));
    assert.deepEqual(result.state.evalCurve, []);
  });

  it('rejects a non-finite loss', async () => {
    const session = new QuadraticSession(shapes);
    session.step = async () => ({ loss: Number.NaN, numTargetTokens: 1, gradients: new Map() });
    await assert.rejects(
      runTrainingLoop({ session, params: startParams(), trainExamples: makeExamples(4), evalExamples: null, padId: 0, settings, checkpointSettings: {} }),
      /loss of step 1 is NaN/,
    );
  });
});
