/**
 * The ONNX decoder against the independent naive reference, and the serving invariants:
 * zero module = frozen model, mixed batches = rows alone, KV-cached decoding = full recomputation.
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
import { randomModule, writeTinyCheckpoint, type TinyCheckpointOptions } from '../helpers/tiny-checkpoint.js';
import { maxAbsDifference, referenceScores } from '../helpers/compare.js';

const TOLERANCE = 1e-4;
const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };

function tokenSequence(length: number, vocab: number, seed: number): number[] {
  return Array.from({ length }, (_, i) => (seed * 31 + i * 17 + ((i * i) % 7)) % vocab);
}

const FAMILIES: { name: string; options: TinyCheckpointOptions }[] = [
  { name: 'gpt2', options: { family: 'gpt2', transformerPrefix: true, vocabSize: 96, hiddenSize: 32, numLayers: 2, numHeads: 4, maxPositions: 64, seed: 3 } },
  {
    name: 'llama with grouped-query attention and biases',
    options: { family: 'llama', vocabSize: 96, hiddenSize: 32, numLayers: 2, numHeads: 4, numKeyValueHeads: 2, attentionBias: true, tieWordEmbeddings: false, maxPositions: 64, seed: 5 },
  },
];

for (const family of FAMILIES) {
  describe(`decoder graph: ${family.name}`, () => {
    let dir: string;
    let config: ModelConfig;
    let weights: ReadonlyMap<string, HostTensor>;
    let engine: Engine;
    let moduleA: SlotModule;
    let moduleB: SlotModule;

    before(async () => {
      dir = await mkdtemp(path.join(tmpdir(), 'engine-test-'));
      await writeTinyCheckpoint(dir, family.options);
      const checkpoint = await loadCheckpoint(dir);
      config = checkpoint.config;
      weights = checkpoint.weights;
      engine = await Engine.create(config, weights, { slotCapacity: 3 });
      moduleA = randomModule(config, { keyRank: 3, valueRank: 4, loraQ: { rank: 2, alpha: 4, bias: true }, seed: 11 });
      moduleB = randomModule(config, { keyRank: 0, valueRank: 2, loraQ: null, seed: 12 });
    });
    after(async () => {
      await engine.dispose();
      await rm(dir, { recursive: true, force: true });
    });

    it('matches the naive reference without a module', async () => {
      const ids = tokenSequence(12, config.vocabSize, 1);
      const got = await scoreTokens(engine, ids, null);
      const want = referenceScores(config, weights, ids, null);
      assert.ok(maxAbsDifference(got, want) < TOLERANCE, `max difference ${maxAbsDifference(got, want)}`);
    });

    it('matches the naive reference with modules', async () => {
      const ids = tokenSequence(10, config.vocabSize, 2);
      for (const module of [moduleA, moduleB]) {
        const got = await scoreTokens(engine, ids, module);
        const want = referenceScores(config, weights, ids, module);
        assert.ok(maxAbsDifference(got, want) < TOLERANCE, `max difference ${maxAbsDifference(got, want)}`);
      }
    });

    it('changes the output with a module', async () => {
      const ids = tokenSequence(10, config.vocabSize, 3);
      const base = await scoreTokens(engine, ids, null);
      const tuned = await scoreTokens(engine, ids, moduleA);
      assert.ok(maxAbsDifference(base, tuned) > 1e-2, `module changed log-probabilities by only ${maxAbsDifference(base, tuned)}`);
    });

    it('equals the frozen model with a zero-value module', async () => {
      const zeroed = new Map(moduleA.tensors);
      for (const [name, t] of moduleA.tensors) {
        if (/inducer\.value\.up\.|lora_q\.(B|bias)/.test(name)) zeroed.set(name, { ...t, data: new Float32Array(t.data.length) });
      }
      const zeroModule: SlotModule = { ...moduleA, tensors: zeroed };
      const ids = tokenSequence(9, config.vocabSize, 4);
      const base = await scoreTokens(engine, ids, null);
      const withZero = await scoreTokens(engine, ids, zeroModule);
      assert.ok(maxAbsDifference(base, withZero) < 1e-6, `difference ${maxAbsDifference(base, withZero)}`);
    });

    it('gives each row of a mixed batch its own result', async () => {
      const requests = [
        { promptIds: tokenSequence(3, config.vocabSize, 5), module: moduleA },
        { promptIds: tokenSequence(7, config.vocabSize, 6), module: null },
        { promptIds: tokenSequence(5, config.vocabSize, 7), module: moduleB },
        { promptIds: tokenSequence(1, config.vocabSize, 8), module: moduleA },
      ].map((r, i) => ({ ...r, sampling: GREEDY, maxNewTokens: 6 + i, stopTokenIds: [] as number[] }));
      const batched = await generateBatch(engine, requests);
      for (let i = 0; i < requests.length; i++) {
        const [alone] = await generateBatch(engine, [requests[i]]);
        assert.deepEqual(batched[i].tokenIds, alone.tokenIds, `row ${i} tokens`);
        const difference = maxAbsDifference(batched[i].logprobs, alone.logprobs);
        assert.ok(difference < TOLERANCE, `row ${i}: logprob difference ${difference}`);
      }
    });

    it('scores right-padded rows as each row alone', async () => {
      const sequences = [tokenSequence(8, config.vocabSize, 21), tokenSequence(5, config.vocabSize, 22), tokenSequence(2, config.vocabSize, 23)];
      const rowModules = [moduleB, moduleA, null];
      const width = 8;
      const slotIds = engine.slots.slotsFor(rowModules);
      const out = await engine.forward({
        inputIds: sequences.map((ids) => [...ids, ...new Array<number>(width - ids.length).fill(0)]),
        positionIds: sequences.map(() => Array.from({ length: width }, (_, i) => i)),
        attentionMask: sequences.map((ids) => Array.from({ length: width }, (_, i) => (i < ids.length ? 1 : 0))),
        logitsIndices: sequences.flatMap((ids, r) => ids.slice(0, -1).map((_, i) => r * width + i)),
        slotIds,
        past: null,
      });
      let row = 0;
      for (let r = 0; r < sequences.length; r++) {
        const ids = sequences[r];
        const alone = await scoreTokens(engine, ids, rowModules[r]);
        const batched: number[] = [];
        for (let i = 0; i + 1 < ids.length; i++, row++) {
          const logits = Array.from(out.logits.subarray(row * out.vocabSize, (row + 1) * out.vocabSize));
          const max = Math.max(...logits);
          const logZ = max + Math.log(logits.reduce((sum, v) => sum + Math.exp(v - max), 0));
          batched.push(logits[ids[i + 1]] - logZ);
        }
        assert.ok(maxAbsDifference(batched, alone) < TOLERANCE, `row ${r}: difference ${maxAbsDifference(batched, alone)}`);
      }
    });

    it('loads the graph from external data with equal results', async () => {
      const cacheDir = path.join(dir, 'graph-cache');
      const external = await Engine.create(config, weights, { slotCapacity: 1, externalDataThresholdBytes: 1, cacheDir });
      try {
        const ids = tokenSequence(7, config.vocabSize, 24);
        const inline = await scoreTokens(engine, ids, moduleA);
        const fromFile = await scoreTokens(external, ids, moduleA);
        assert.ok(maxAbsDifference(inline, fromFile) < 1e-6, `difference ${maxAbsDifference(inline, fromFile)}`);
      } finally {
        await external.dispose();
      }
    });

    it('decodes with the KV cache as full recomputation does', async () => {
      const prompt = tokenSequence(4, config.vocabSize, 9);
      for (const module of [null, moduleA]) {
        const [generated] = await generateBatch(engine, [{ promptIds: prompt, module, sampling: GREEDY, maxNewTokens: 12, stopTokenIds: [] }]);
        const full = [...prompt, ...generated.tokenIds];
        const recomputed = (await scoreTokens(engine, full, module)).slice(prompt.length - 1);
        const reference = referenceScores(config, weights, full, module).slice(prompt.length - 1);
        assert.ok(maxAbsDifference(generated.logprobs, recomputed) < TOLERANCE, `cached vs recomputed ${maxAbsDifference(generated.logprobs, recomputed)}`);
        assert.ok(maxAbsDifference(generated.logprobs, reference) < TOLERANCE, `cached vs naive ${maxAbsDifference(generated.logprobs, reference)}`);
      }
    });
  });
}
