/**
 * TrainingSession with prefix and LoRA modules on tiny GPT-2 and Llama checkpoints: gradients
 * against central finite differences, the loss against the float64 naive decoder, and a few
 * gradient-descent steps.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { ModelConfig } from '../../src/model/config.js';
import { floatTensor, type HostTensor } from '../../src/model/tensor.js';
import { TrainingSession, type TrainingBatch } from '../../src/train/training-session.js';
import type { MethodSettings } from '../../src/tuning/method.js';
import { naiveLogprobs, type NaiveModule } from '../reference/naive-decoder.js';
import { randomLoraModule, randomPrefixModule } from '../helpers/baseline-modules.js';
import { writeTinyCheckpoint, type TinyCheckpointOptions } from '../helpers/tiny-checkpoint.js';

const FAMILIES: { name: string; options: TinyCheckpointOptions }[] = [
  { name: 'gpt2', options: { family: 'gpt2', vocabSize: 24, hiddenSize: 16, numLayers: 2, numHeads: 2, maxPositions: 16, seed: 7 } },
  { name: 'llama', options: { family: 'llama', vocabSize: 24, hiddenSize: 16, numLayers: 2, numHeads: 4, numKeyValueHeads: 2, attentionBias: true, maxPositions: 16, seed: 8 } },
];

/** Right-padded rows of different lengths; labels are the next token, -100 on padding and on the last real token. */
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
    [-100, 1, 20, 9, 4, -100],
    [11, 2, 17, -100, -100, -100],
    [14, 6, -100, -100, -100, -100],
  ],
};

interface Case {
  readonly name: string;
  readonly settings: MethodSettings;
  readonly module: (config: ModelConfig) => NaiveModule;
}

const CASES: Case[] = [
  { name: 'prefix', settings: { method: 'prefix', prefixLength: 3 }, module: (config) => randomPrefixModule(config, 3, 31, 0.5) },
  { name: 'lora', settings: { method: 'lora', rank: 2, alpha: 4 }, module: (config) => randomLoraModule(config, 2, 4, 32, 0.3) },
];

/** Mean loss of BATCH (no label smoothing) from the float64 naive decoder, each row alone without padding. */
function naiveMeanLoss(config: ModelConfig, weights: ReadonlyMap<string, HostTensor>, module: NaiveModule): number {
  let sum = 0;
  let count = 0;
  BATCH.inputIds.forEach((row, r) => {
    const length = BATCH.attentionMask[r].filter((m) => m === 1).length;
    const logProbs = naiveLogprobs(config, weights, row.slice(0, length), module);
    for (let t = 0; t < length; t++) {
      const label = BATCH.labels[r][t];
      if (label === -100) continue;
      sum += -logProbs[t][label];
      count += 1;
    }
  });
  return sum / count;
}

function cloneParams(params: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  return new Map([...params].map(([name, t]) => [name, floatTensor(t.shape, Float32Array.from(t.data))]));
}

async function withSession<T>(options: TinyCheckpointOptions, settings: MethodSettings, body: (session: TrainingSession, config: ModelConfig, weights: Map<string, HostTensor>) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(tmpdir(), 'baseline-training-'));
  try {
    const { config, weights } = await writeTinyCheckpoint(dir, options);
    const session = await TrainingSession.create(config, weights, settings, { labelSmoothing: 0, dropout: 0 });
    try {
      return await body(session, config, weights);
    } finally {
      await session.dispose();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

for (const family of FAMILIES) {
  for (const testCase of CASES) {
    describe(`TrainingSession with a ${testCase.name} module: ${family.name}`, () => {
      it('gives the loss of the naive decoder', async () => {
        await withSession(family.options, testCase.settings, async (session, config, weights) => {
          const module = testCase.module(config);
          const { loss } = await session.step(BATCH, module.tensors, 0);
          const want = naiveMeanLoss(config, weights, module);
          assert.ok(Math.abs(loss - want) < 1e-4, `loss ${loss}, naive ${want}`);
        });
      });

      it('gives gradients that match finite differences', async () => {
        await withSession(family.options, testCase.settings, async (session, config) => {
          const params = cloneParams(testCase.module(config).tensors);
          assert.deepEqual([...session.parameterShapes.keys()].sort(), [...params.keys()].sort());
          const { gradients } = await session.step(BATCH, params, 0);
          assert.deepEqual([...gradients.keys()].sort(), [...params.keys()].sort());

          // Float32 central differences with h = 1e-2, as in the inducer gradient test: truncation
          // error about 1e-4, rounding error about 2e-5.
          const h = 1e-2;
          const loss = async (): Promise<number> => (await session.step(BATCH, params, 0)).loss;
          let largest = 0;
          for (const [name, tensor] of params) {
            const gradient = gradients.get(name) as Float32Array;
            assert.equal(gradient.length, tensor.data.length, `${name}: gradient length`);
            const stride = Math.max(1, Math.floor(tensor.data.length / 5));
            for (let i = 0; i < tensor.data.length; i += stride) {
              const original = tensor.data[i];
              tensor.data[i] = original + h;
              const plus = await loss();
              tensor.data[i] = original - h;
              const minus = await loss();
              tensor.data[i] = original;
              const numeric = (plus - minus) / (2 * h);
              largest = Math.max(largest, Math.abs(numeric));
              const tolerance = 1e-3 + 2e-2 * Math.abs(numeric);
              assert.ok(Math.abs(gradient[i] - numeric) <= tolerance, `${name}[${i}]: autodiff ${gradient[i]}, finite difference ${numeric}`);
            }
          }
          assert.ok(largest > 1e-3, `every checked finite difference is below 1e-3 (largest ${largest}), so the check proves little`);
        });
      });

      it('lowers the loss in a few gradient steps', async () => {
        await withSession(family.options, testCase.settings, async (session, config) => {
          const params = cloneParams(testCase.module(config).tensors);
          const first = await session.step(BATCH, params, 0);
          let last = first;
          for (let step = 0; step < 5; step++) {
            for (const [name, tensor] of params) {
              const gradient = last.gradients.get(name) as Float32Array;
              for (let i = 0; i < tensor.data.length; i++) tensor.data[i] -= 0.5 * gradient[i];
            }
            last = await session.step(BATCH, params, 0);
          }
          assert.ok(last.loss < first.loss - 1e-3, `loss ${first.loss} -> ${last.loss}`);
        });
      });
    });
  }
}

describe('TrainingSession LoRA dropout', () => {
  it('is deterministic per seed and differs between seeds', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'baseline-dropout-'));
    try {
      const { config, weights } = await writeTinyCheckpoint(dir, FAMILIES[0].options);
      const session = await TrainingSession.create(config, weights, { method: 'lora', rank: 2, alpha: 4 }, { labelSmoothing: 0, dropout: 0.5 });
      try {
        const params = randomLoraModule(config, 2, 4, 40).tensors;
        const a = await session.step(BATCH, params, 1);
        const b = await session.step(BATCH, params, 1);
        const c = await session.step(BATCH, params, 2);
        assert.equal(a.loss, b.loss);
        assert.notEqual(a.loss, c.loss);
      } finally {
        await session.dispose();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
