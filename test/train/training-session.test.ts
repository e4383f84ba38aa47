/**
 * TrainingSession on tiny GPT-2 and Llama checkpoints: gradients against central finite
 * differences, the loss against the float64 naive decoder, dropout determinism, and a few
 * gradient-descent steps.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { ModelConfig } from '../../src/model/config.js';
import { floatTensor, type HostTensor } from '../../src/model/tensor.js';
import { TrainingInputError, TrainingOptionsError, TrainingSession, type TrainingBatch } from '../../src/train/training-session.js';
import { inducerTensorShapes, initInducerTensors, type InducerHyperParams } from '../../src/tuning/inducer.js';
import { naiveLogprobs, type NaiveModule } from '../reference/naive-decoder.js';
import { randomModule, writeTinyCheckpoint, type TinyCheckpointOptions } from '../helpers/tiny-checkpoint.js';

interface Family {
  readonly name: string;
  readonly options: TinyCheckpointOptions;
}

const FAMILIES: Family[] = [
  { name: 'gpt2', options: { family: 'gpt2', vocabSize: 24, hiddenSize: 16, numLayers: 2, numHeads: 2, maxPositions: 16, seed: 7 } },
  { name: 'llama', options: { family: 'llama', vocabSize: 24, hiddenSize: 16, numLayers: 2, numHeads: 4, numKeyValueHeads: 2, attentionBias: true, maxPositions: 16, seed: 8 } },
];

/** Key MLP, value MLP and LoRA-Q with bias: every tensor kind of the module file. */
const FULL_HP: InducerHyperParams = { keyRank: 3, valueRank: 2, loraQ: { rank: 2, alpha: 4, bias: true } };

/**
 * Three right-padded rows of different lengths. Labels are the next token, -100 on padding, on
 * the last real token and on a "source" prefix of row 0, as a trainer builds them.
 */
const BATCH: TrainingBatch = {
  inputIds: [
    [3, 7, 1, 20, 9, 4],
    [5, 11, 2, 17, 0, 0],
    [8, 14, 6, 0, 0, 0],
  ],
  attentionMask: [
    [1, 1, 1, 1, 1, 1],
    [1, 1, 1, 1, 0, 0],
    [1, 1, 1, 0, 0, 0],
  ],
  labels: [
    [-100, -100, 20, 9, 4, -100],
    [11, 2, 17, -100, -100, -100],
    [14, 6, -100, -100, -100, -100],
  ],
};

/** Loss of BATCH from the float64 naive decoder: each row on its own without padding, mean over targets. */
function naiveBatchLoss(config: ModelConfig, weights: ReadonlyMap<string, HostTensor>, module: NaiveModule, batch: TrainingBatch, labelSmoothing: number): { sum: number; count: number } {
  let sum = 0;
  let count = 0;
  batch.inputIds.forEach((row, r) => {
    const length = batch.attentionMask[r].filter((m) => m === 1).length;
    const logProbs = naiveLogprobs(config, weights, row.slice(0, length), module);
    for (let t = 0; t < length; t++) {
      const label = batch.labels[r][t];
      if (label === -100) continue;
      const uniform = -logProbs[t].reduce((a, v) => a + v, 0) / config.vocabSize;
      sum += (1 - labelSmoothing) * -logProbs[t][label] + labelSmoothing * uniform;
      count += 1;
    }
  });
  return { sum, count };
}

function moduleOf(hp: InducerHyperParams, tensors: ReadonlyMap<string, HostTensor>): NaiveModule {
  return { keyRank: hp.keyRank, valueRank: hp.valueRank, loraQ: hp.loraQ, tensors };
}

/** Copies every tensor so a test can perturb parameters without touching the original. */
function cloneParams(params: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  return new Map([...params].map(([name, t]) => [name, floatTensor(t.shape, Float32Array.from(t.data))]));
}

async function withCheckpoint<T>(options: TinyCheckpointOptions, body: (config: ModelConfig, weights: Map<string, HostTensor>) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(tmpdir(), 'training-session-'));
  try {
    const { config, weights } = await writeTinyCheckpoint(dir, options);
    return await body(config, weights);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

for (const family of FAMILIES) {
  describe(`TrainingSession gradients: ${family.name}`, () => {
    for (const hp of [FULL_HP, { keyRank: 0, valueRank: 3, loraQ: null } satisfies InducerHyperParams]) {
      it(`match finite differences (key rank ${hp.keyRank}, LoRA-Q ${hp.loraQ ? 'on' : 'off'})`, async () => {
        await withCheckpoint(family.options, async (config, weights) => {
          const session = await TrainingSession.create(config, weights, hp, { labelSmoothing: 0.1, dropout: 0 });
          try {
            const params = cloneParams(randomModule(config, { ...hp, seed: 3, scale: 0.3 }).tensors);
            assert.deepEqual([...session.parameterShapes.keys()].sort(), [...params.keys()].sort());
            const { gradients } = await session.step(BATCH, params, 0);
            assert.deepEqual([...gradients.keys()].sort(), [...inducerTensorShapes(config, hp).keys()].sort());

            // Float32 central differences with h = 1e-2: the loss (about log V = 3.2) is smooth in
            // every parameter, so truncation error is about h^2 * |f'''| (1e-4 scale), and rounding
            // error is about 3.2 * 6e-8 / h = 2e-5. The tolerance leaves a factor of about 10.
            const h = 1e-2;
            const loss = async (): Promise<number> => (await session.step(BATCH, params, 0)).loss;
            for (const [name, tensor] of params) {
              const gradient = gradients.get(name) as Float32Array;
              assert.equal(gradient.length, tensor.data.length, `${name}: gradient length`);
              const stride = Math.max(1, Math.floor(tensor.data.length / 6));
              for (let i = 0; i < tensor.data.length; i += stride) {
                const original = tensor.data[i];
                tensor.data[i] = original + h;
                const plus = await loss();
                tensor.data[i] = original - h;
                const minus = await loss();
                tensor.data[i] = original;
                const numeric = (plus - minus) / (2 * h);
                const tolerance = 1e-3 + 2e-2 * Math.abs(numeric);
                assert.ok(Math.abs(gradient[i] - numeric) <= tolerance, `${name}[${i}]: autodiff ${gradient[i]}, finite difference ${numeric}`);
              }
            }
          } finally {
            await session.dispose();
          }
        });
      });
    }
  });

  describe(`TrainingSession loss: ${family.name}`, () => {
    it('equals the naive decoder with padding and ignored labels', async () => {
      await withCheckpoint(family.options, async (config, weights) => {
        const module = randomModule(config, { ...FULL_HP, seed: 5, scale: 0.3 });
        const plain = naiveBatchLoss(config, weights, module, BATCH, 0);
        const smoothed = naiveBatchLoss(config, weights, module, BATCH, 0.1);
        assert.equal(plain.count, 8); // 3 + 3 + 2 labels other than -100

        // Float32 graph against float64 reference on losses of about 3: a relative 1e-5 is about
        // 100 float32 roundings, far below any modelling error (which moves the loss by 1e-2 or more).
        const close = (actual: number, expected: number, what: string): void => {
          assert.ok(Math.abs(actual - expected) <= 1e-5 * Math.abs(expected) + 1e-6, `${what}: got ${actual}, expected ${expected}`);
        };
        for (const [labelSmoothing, dropout] of [[0, 0], [0.1, 0], [0.1, 0.2]]) {
          const session = await TrainingSession.create(config, weights, FULL_HP, { labelSmoothing, dropout });
          try {
            const evaluated = await session.evaluate(BATCH, module.tensors);
            assert.equal(evaluated.numTargetTokens, plain.count);
            close(evaluated.lossSum, plain.sum, `evaluate sum (smoothing ${labelSmoothing}, dropout ${dropout})`);
            if (dropout === 0) {
              const step = await session.step(BATCH, module.tensors, 1);
              assert.equal(step.numTargetTokens, plain.count);
              const expected = labelSmoothing === 0 ? plain : smoothed;
              close(step.loss, expected.sum / expected.count, `step mean (smoothing ${labelSmoothing})`);
            }
          } finally {
            await session.dispose();
          }
        }
      });
    });
  });
}

describe('TrainingSession dropout', () => {
  const family = FAMILIES[0];
  let dir = '';
  let config: ModelConfig;
  let weights: Map<string, HostTensor>;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'training-session-'));
    ({ config, weights } = await writeTinyCheckpoint(dir, family.options));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is deterministic per seed', async () => {
    const session = await TrainingSession.create(config, weights, FULL_HP, { labelSmoothing: 0, dropout: 0.3 });
    try {
      const params = randomModule(config, { ...FULL_HP, seed: 4, scale: 0.5 }).tensors;
      const first = await session.step(BATCH, params, 11);
      const again = await session.step(BATCH, params, 11);
      const other = await session.step(BATCH, params, 12);
      assert.equal(again.loss, first.loss);
      for (const [name, gradient] of first.gradients) assert.deepEqual(again.gradients.get(name), gradient, `${name}: gradient for the same seed`);
      assert.notEqual(other.loss, first.loss);
      const evaluated = await session.evaluate(BATCH, params);
      assert.notEqual(first.loss, evaluated.lossSum / evaluated.numTargetTokens);
    } finally {
      await session.dispose();
    }
  });

  it('with probability 0 equals evaluate', async () => {
    const session = await TrainingSession.create(config, weights, FULL_HP, { labelSmoothing: 0, dropout: 0 });
    try {
      const params = randomModule(config, { ...FULL_HP, seed: 4, scale: 0.5 }).tensors;
      const step = await session.step(BATCH, params, 11);
      const evaluated = await session.evaluate(BATCH, params);
      const mean = evaluated.lossSum / evaluated.numTargetTokens;
      assert.ok(Math.abs(step.loss - mean) <= 1e-6 * mean, `step ${step.loss}, evaluate mean ${mean}`);
    } finally {
      await session.dispose();
    }
  });

  it('gives gradients of the loss with the drawn masks', async () => {
    const session = await TrainingSession.create(config, weights, FULL_HP, { labelSmoothing: 0.1, dropout: 0.3 });
    try {
      const params = cloneParams(randomModule(config, { ...FULL_HP, seed: 6, scale: 0.3 }).tensors);
      const seed = 21;
      const { gradients } = await session.step(BATCH, params, seed);
      const h = 1e-2;
      for (const name of ['layers.1.inducer.value.down.weight', 'layers.0.inducer.key.up.weight', 'layers.0.lora_q.A', 'layers.1.lora_q.B']) {
        const tensor = params.get(name) as HostTensor;
        const gradient = gradients.get(name) as Float32Array;
        for (let i = 0; i < tensor.data.length; i += Math.max(1, Math.floor(tensor.data.length / 4))) {
          const original = tensor.data[i];
          tensor.data[i] = original + h;
          const plus = (await session.step(BATCH, params, seed)).loss;
          tensor.data[i] = original - h;
          const minus = (await session.step(BATCH, params, seed)).loss;
          tensor.data[i] = original;
          const numeric = (plus - minus) / (2 * h);
          assert.ok(Math.abs(gradient[i] - numeric) <= 1e-3 + 2e-2 * Math.abs(numeric), `${name}[${i}]: autodiff ${gradient[i]}, finite difference ${numeric}`);
        }
      }
    } finally {
      await session.dispose();
    }
  });
});

describe('TrainingSession descent', () => {
  it('lowers the loss in a few gradient steps', async () => {
    await withCheckpoint(FAMILIES[1].options, async (config, weights) => {
      const session = await TrainingSession.create(config, weights, FULL_HP, { labelSmoothing: 0, dropout: 0 });
      try {
        const params = initInducerTensors(config, FULL_HP, 'default', 9);
        const losses: number[] = [];
        for (let iteration = 0; iteration < 6; iteration++) {
          const { loss, gradients } = await session.step(BATCH, params, iteration);
          losses.push(loss);
          for (const [name, tensor] of params) {
            const gradient = gradients.get(name) as Float32Array;
            for (let i = 0; i < tensor.data.length; i++) tensor.data[i] -= 0.5 * gradient[i];
          }
        }
        const evaluated = await session.evaluate(BATCH, params);
        const finalLoss = evaluated.lossSum / evaluated.numTargetTokens;
        for (let i = 1; i < losses.length; i++) assert.ok(losses[i] < losses[i - 1], `loss rose at step ${i}: ${losses.join(', ')}`);
        assert.ok(finalLoss < losses[0] - 0.05, `loss fell from ${losses[0]} only to ${finalLoss}`);
      } finally {
        await session.dispose();
      }
    });
  });
});

describe('TrainingSession inputs', () => {
  it('rejects invalid options, parameters and batches', async () => {
    await withCheckpoint(FAMILIES[0].options, async (config, weights) => {
      await assert.rejects(TrainingSession.create(config, weights, FULL_HP, { labelSmoothing: 1, dropout: 0 }), TrainingOptionsError);
      await assert.rejects(TrainingSession.create(config, weights, FULL_HP, { labelSmoothing: 0, dropout: -0.1 }), TrainingOptionsError);
      const session = await TrainingSession.create(config, weights, FULL_HP, { labelSmoothing: 0, dropout: 0 });
      try {
        const params = initInducerTensors(config, FULL_HP, 'default', 1);
        const missing = new Map(params);
        missing.delete('layers.1.lora_q.bias');
        await assert.rejects(session.step(BATCH, missing, 0), /layers\.1\.lora_q\.bias is missing/);
        const misshaped = new Map(params);
        misshaped.set('layers.0.inducer.value.up.bias', floatTensor([config.hiddenSize + 1]));
        await assert.rejects(session.step(BATCH, misshaped, 0), /layers\.0\.inducer\.value\.up\.bias has shape/);

        const labels = BATCH.labels.map((row) => [...row]);
        labels[1][5] = 3; // a label on padding
        await assert.rejects(session.step({ ...BATCH, labels }, params, 0), TrainingInputError);
        const ids = BATCH.inputIds.map((row) => [...row]);
        ids[0][0] = config.vocabSize;
        await assert.rejects(session.evaluate({ ...BATCH, inputIds: ids }, params), /outside the vocabulary/);

        const none = { ...BATCH, labels: BATCH.labels.map((row) => row.map(() => -100)) };
        const empty = await session.step(none, params, 0);
        assert.equal(empty.loss, 0);
        assert.equal(empty.numTargetTokens, 0);
        for (const gradient of empty.gradients.values()) assert.ok(gradient.every((g) => g === 0));

        const running = session.step(BATCH, params, 0);
        await assert.rejects(session.evaluate(BATCH, params), /still running/);
        await running;
      } finally {
        await session.dispose();
      }
      await assert.rejects(session.step(BATCH, initInducerTensors(config, FULL_HP, 'default', 1), 0), /disposed/);
    });
  });
});
