/**
 * Prefix-tuning and LoRA modules in the ONNX decoder: against the independent naive reference,
 * zero-initialised LoRA = frozen model, mixed batches of all methods = rows alone, and KV-cached
 * decoding with a prefix = full recomputation.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadCheckpoint } from '../../src/model/checkpoint.js';
import type { ModelConfig } from '../../src/model/config.js';
import type { HostTensor } from '../../src/model/tensor.js';
import { Engine } from '../../src/runtime/engine.js';
import { generateBatch, scoreTokens } from '../../src/runtime/generate.js';
import type { SlotModule } from '../../src/runtime/slot-table.js';
import { initLoraTensors } from '../../src/tuning/lora.js';
import { randomLoraModule, randomPrefixModule } from '../helpers/baseline-modules.js';
import { randomModule, writeTinyCheckpoint, type TinyCheckpointOptions } from '../helpers/tiny-checkpoint.js';
import { maxAbsDifference, referenceScores } from '../helpers/compare.js';

const TOLERANCE = 1e-4;
const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };

function tokenSequence(length: number, vocab: number, seed: number): number[] {
  return Array.from({ length }, (_, i) => (seed * 29 + i * 13 + ((i * i) % 5)) % vocab);
}

const FAMILIES: { name: string; options: TinyCheckpointOptions }[] = [
  { name: 'gpt2', options: { family: 'gpt2', transformerPrefix: true, vocabSize: 96, hiddenSize: 32, numLayers: 2, numHeads: 4, maxPositions: 64, seed: 3 } },
  {
    name: 'llama with grouped-query attention',
    options: { family: 'llama', vocabSize: 96, hiddenSize: 32, numLayers: 2, numHeads: 4, numKeyValueHeads: 2, attentionBias: true, tieWordEmbeddings: false, maxPositions: 64, seed: 5 },
  },
];

for (const family of FAMILIES) {
  describe(`prefix and LoRA modules: ${family.name}`, () => {
    let dir: string;
    let config: ModelConfig;
    let weights: ReadonlyMap<string, HostTensor>;
    let engine: Engine;
    let prefix: SlotModule;
    let shortPrefix: SlotModule;
    let lora: SlotModule;
    let inducer: SlotModule;

    before(async () => {
      dir = await mkdtemp(path.join(tmpdir(), 'baseline-methods-'));
      await writeTinyCheckpoint(dir, family.options);
      const checkpoint = await loadCheckpoint(dir);
      config = checkpoint.config;
      weights = checkpoint.weights;
      engine = await Engine.create(config, weights, { slotCapacity: 4 });
      prefix = randomPrefixModule(config, 3, 21);
      shortPrefix = randomPrefixModule(config, 1, 22);
      lora = randomLoraModule(config, 2, 4, 23);
      inducer = randomModule(config, { keyRank: 2, valueRank: 3, loraQ: { rank: 2, alpha: 4, bias: true }, seed: 24 });
    });
    after(async () => {
      await engine.dispose();
      await rm(dir, { recursive: true, force: true });
    });

    it('matches the naive reference with a prefix module', async () => {
      const ids = tokenSequence(10, config.vocabSize, 1);
      for (const module of [prefix, shortPrefix]) {
        const got = await scoreTokens(engine, ids, module);
        const want = referenceScores(config, weights, ids, module);
        assert.ok(maxAbsDifference(got, want) < TOLERANCE, `max difference ${maxAbsDifference(got, want)}`);
      }
    });

    it('matches the naive reference with a LoRA module', async () => {
      const ids = tokenSequence(10, config.vocabSize, 2);
      const got = await scoreTokens(engine, ids, lora);
      const want = referenceScores(config, weights, ids, lora);
      assert.ok(maxAbsDifference(got, want) < TOLERANCE, `max difference ${maxAbsDifference(got, want)}`);
    });

    it('changes the output with prefix and LoRA modules', async () => {
      const ids = tokenSequence(10, config.vocabSize, 3);
      const base = await scoreTokens(engine, ids, null);
      for (const module of [prefix, lora]) {
        const tuned = await scoreTokens(engine, ids, module);
        assert.ok(maxAbsDifference(base, tuned) > 1e-2, `${module.method} changed log-probabilities by only ${maxAbsDifference(base, tuned)}`);
      }
    });

    it('equals the frozen model with a fresh LoRA module', async () => {
      const fresh: SlotModule = { method: 'lora', rank: 4, alpha: 8, tensors: initLoraTensors(config, { method: 'lora', rank: 4, alpha: 8 }, 7) };
      const ids = tokenSequence(9, config.vocabSize, 4);
      const withFresh = await scoreTokens(engine, ids, fresh);
      const frozen = referenceScores(config, weights, ids, null);
      assert.ok(maxAbsDifference(withFresh, frozen) < TOLERANCE, `fresh LoRA vs naive frozen model ${maxAbsDifference(withFresh, frozen)}`);
      const base = await scoreTokens(engine, ids, null);
      assert.ok(maxAbsDifference(base, withFresh) < 1e-6, `fresh LoRA vs graph without a module ${maxAbsDifference(base, withFresh)}`);
    });

    it('gives each row of a batch mixing all methods its own result', async () => {
      const rowModules = [prefix, null, lora, inducer, shortPrefix, prefix];
      const requests = rowModules.map((module, i) => ({
        promptIds: tokenSequence(2 + ((i * 3) % 6), config.vocabSize, 10 + i),
        module,
        sampling: GREEDY,
        maxNewTokens: 5 + i,
        stopTokenIds: [] as number[],
      }));
      const batched = await generateBatch(engine, requests);
      for (let i = 0; i < requests.length; i++) {
        const [alone] = await generateBatch(engine, [requests[i]]);
        assert.deepEqual(batched[i].tokenIds, alone.tokenIds, `row ${i} tokens`);
        const difference = maxAbsDifference(batched[i].logprobs, alone.logprobs);
        assert.ok(difference < TOLERANCE, `row ${i}: logprob difference ${difference}`);
      }
    });

    it('keeps rows without a prefix exact next to a prefix row', async () => {
      const ids = tokenSequence(8, config.vocabSize, 30);
      const alone = await scoreTokens(engine, ids, null);
      // Load a prefix module into the table first, so slot 0 runs with padded, masked prefix columns.
      engine.slots.slotsFor([prefix, lora]);
      const beside = await scoreTokens(engine, ids, null);
      assert.ok(maxAbsDifference(alone, referenceScores(config, weights, ids, null)) < TOLERANCE);
      assert.ok(maxAbsDifference(alone, beside) < 1e-6, `difference ${maxAbsDifference(alone, beside)}`);
    });

    it('decodes with the KV cache as full recomputation does with a prefix', async () => {
      const prompt = tokenSequence(4, config.vocabSize, 9);
      for (const module of [prefix, lora]) {
        const [generated] = await generateBatch(engine, [{ promptIds: prompt, module, sampling: GREEDY, maxNewTokens: 12, stopTokenIds: [] }]);
        const full = [...prompt, ...generated.tokenIds];
        const recomputed = (await scoreTokens(engine, full, module)).slice(prompt.length - 1);
        const reference = referenceScores(config, weights, full, module).slice(prompt.length - 1);
        assert.ok(maxAbsDifference(generated.logprobs, recomputed) < TOLERANCE, `${module.method}: cached vs recomputed ${maxAbsDifference(generated.logprobs, recomputed)}`);
        assert.ok(maxAbsDifference(generated.logprobs, reference) < TOLERANCE, `${module.method}: cached vs naive ${maxAbsDifference(generated.logprobs, reference)}`);
      }
    });
  });
}
