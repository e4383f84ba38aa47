/**
 * Checks that make the naive reference trustworthy: the Llama path reproduces the known greedy
 * output of a real checkpoint, the GPT-2 path matches a hand-derived special case, and the
 * inducer math matches separately written formulas and the zero-module identity.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { Tokenizer } from '@huggingface/tokenizers';
import { loadModelConfig, type ModelConfig } from '../../src/model/config.js';
import { readSafetensorsFile } from '../../src/model/safetensors.js';
import { floatTensor, type HostTensor } from '../../src/model/tensor.js';
import { randomModule, writeTinyCheckpoint } from '../helpers/tiny-checkpoint.js';
import { naiveLogits, naiveLogprobs, type NaiveModule } from './naive-decoder.js';
import { naiveInducer, naiveLoraQ, type NaiveInducerParams } from './naive-inducer.js';

// Compiled to dist/test/reference/, so four levels up is the folder that contains the project.
const STORIES_DIR = fileURLToPath(new URL('../../../../shared/models/stories260k/', import.meta.url));
// Greedy continuation of the BOS token for 60 new tokens, as the model folder's README gives it.
const STORIES_GREEDY_TEXT =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. ' +
  'One day, she saw a big, red ball. She wanted to play with it, but it was too high';

// ---------------------------------------------------------------------------------------------
// Helpers written separately from the reference.

function seededUniform(seed: number): () => number {
  // A linear congruential generator, deliberately different from the helper's mulberry32.
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 4294967296;
  };
}

function randomArray(next: () => number, length: number, scale: number): Float64Array {
  return Float64Array.from({ length }, () => (2 * next() - 1) * scale);
}

function sigmoid(t: number): number {
  return 1 / (1 + Math.exp(-t));
}

/** Log-sum-exp over the finite entries of a row. */
function logSumExp(row: readonly number[]): number {
  const finite = row.filter((value) => Number.isFinite(value));
  const max = Math.max(...finite);
  return max + Math.log(finite.reduce((sum, value) => sum + Math.exp(value - max), 0));
}

function maxAbsDifference(a: readonly (readonly number[])[], b: readonly (readonly number[])[]): number {
  assert.equal(a.length, b.length, 'row counts differ');
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    assert.equal(a[i].length, b[i].length, `row ${i} lengths differ`);
    for (let c = 0; c < a[i].length; c++) max = Math.max(max, Math.abs(a[i][c] - b[i][c]));
  }
  return max;
}

function argmax(row: readonly number[]): number {
  let best = 0;
  for (let c = 1; c < row.length; c++) if (row[c] > row[best]) best = c;
  return best;
}

/** Random queries `[H][N][d]` and causal scores `[H][N][N]` from random keys. */
function randomAttention(next: () => number, H: number, N: number, d: number, scale: number) {
  const q = Array.from({ length: H }, () => Array.from({ length: N }, () => Array.from(randomArray(next, d, scale))));
  const k = Array.from({ length: H }, () => Array.from({ length: N }, () => Array.from(randomArray(next, d, scale))));
  const scores = q.map((rows, h) =>
    rows.map((query, i) =>
      k[h].map((key, j) => (j <= i ? query.reduce((sum, value, c) => sum + value * key[c], 0) / Math.sqrt(d) : -Infinity)),
    ),
  );
  return { q, scores };
}

function randomInducerParams(next: () => number, H: number, d: number, D: number, keyRank: number, valueRank: number): NaiveInducerParams {
  const base = {
    keyRank,
    valueRank,
    valueDown: randomArray(next, H * d * valueRank, 0.5),
    valueDownBias: randomArray(next, H * valueRank, 0.5),
    valueUp: randomArray(next, H * valueRank * D, 0.5),
    valueUpBias: randomArray(next, D, 0.5),
  };
  if (keyRank < 2) return base;
  return {
    ...base,
    keyDown: randomArray(next, H * d * keyRank, 0.5),
    keyDownBias: randomArray(next, H * keyRank, 0.5),
    keyUp: randomArray(next, H * keyRank * d, 0.5),
    keyUpBias: randomArray(next, H * d, 0.5),
  };
}

/** Copies a module with the value up-projection, its bias and the LoRA B and bias set to zero. */
function zeroValuePathModule(module: NaiveModule): NaiveModule {
  const tensors = new Map<string, HostTensor>();
  for (const [name, tensor] of module.tensors) {
    const zeroed = /\.(inducer\.value\.up\.(weight|bias)|lora_q\.(B|bias))$/.test(name);
    tensors.set(name, zeroed ? floatTensor(tensor.shape) : tensor);
  }
  return { ...module, tensors };
}

// ---------------------------------------------------------------------------------------------

describe('naiveInducer', () => {
  it('matches a hand-computed single query', () => {
    // H = 1, d = 2, D = 2, one query, one visible key with score 0.
    const { lambda, delta } = naiveInducer([[[1, 0]]], [[[0]]], {
      keyRank: 1,
      valueRank: 1,
      valueDown: Float64Array.of(0.5, 0),
      valueDownBias: Float64Array.of(0),
      valueUp: Float64Array.of(2, -1),
      valueUpBias: Float64Array.of(0.25, 0.5),
    });
    // s = <q, q>/√2 = 1/√2 and λ = e^s / (e^s + e^0).
    const expectedLambda = Math.exp(Math.SQRT1_2) / (Math.exp(Math.SQRT1_2) + 1);
    assert.ok(Math.abs(lambda[0][0] - expectedLambda) < 1e-15);
    const z = Math.tanh(0.5);
    assert.ok(Math.abs(delta[0][0] - (expectedLambda * z * 2 + 0.25)) < 1e-15);
    assert.ok(Math.abs(delta[0][1] - (expectedLambda * z * -1 + 0.5)) < 1e-15);
  });

  it('lambda equals sigmoid(s - LSE) with a key MLP', () => {
    const next = seededUniform(11);
    const [H, N, d, D, keyRank, valueRank] = [3, 5, 4, 6, 3, 2];
    const { q, scores } = randomAttention(next, H, N, d, 1.5);
    const params = randomInducerParams(next, H, d, D, keyRank, valueRank);
    const { lambda } = naiveInducer(q, scores, params);
    const { keyDown, keyDownBias, keyUp, keyUpBias } = params as Required<NaiveInducerParams>;

    for (let h = 0; h < H; h++) {
      for (let i = 0; i < N; i++) {
        const query = q[h][i];
        // f_k(q) = tanh(q A_k + a_k) B_k + b_k, written as sums over the rank index.
        const hidden = Array.from({ length: keyRank }, (_, r) =>
          Math.tanh(keyDownBias[h * keyRank + r] + query.reduce((sum, value, c) => sum + value * keyDown[(h * d + c) * keyRank + r], 0)),
        );
        const keyShift = Array.from({ length: d }, (_, c) =>
          keyUpBias[h * d + c] + hidden.reduce((sum, u, r) => sum + u * keyUp[(h * keyRank + r) * d + c], 0),
        );
        const s = query.reduce((sum, value, c) => sum + value * (value + keyShift[c]), 0) / Math.sqrt(d);
        const expected = sigmoid(s - logSumExp(scores[h][i]));
        assert.ok(Math.abs(lambda[h][i] - expected) < 1e-12, `head ${h} row ${i}: ${lambda[h][i]} vs ${expected}`);
      }
    }
  });

  it('key rank 0 and 1 use the query as key', () => {
    const next = seededUniform(12);
    const [H, N, d, D] = [2, 4, 4, 3];
    const { q, scores } = randomAttention(next, H, N, d, 1);
    for (const keyRank of [0, 1]) {
      const { lambda } = naiveInducer(q, scores, randomInducerParams(next, H, d, D, keyRank, 2));
      for (let h = 0; h < H; h++) {
        for (let i = 0; i < N; i++) {
          const squaredNorm = q[h][i].reduce((sum, value) => sum + value * value, 0);
          const expected = sigmoid(squaredNorm / Math.sqrt(d) - logSumExp(scores[h][i]));
          assert.ok(Math.abs(lambda[h][i] - expected) < 1e-12, `rank ${keyRank} head ${h} row ${i}`);
        }
      }
    }
  });

  it('zero key MLP output equals key rank 1', () => {
    const next = seededUniform(13);
    const [H, N, d, D] = [2, 3, 4, 5];
    const { q, scores } = randomAttention(next, H, N, d, 1);
    const withMlp = randomInducerParams(next, H, d, D, 3, 2);
    const zeroUp = { ...withMlp, keyUp: new Float64Array(H * 3 * d), keyUpBias: new Float64Array(H * d) };
    const rankOne = { ...withMlp, keyRank: 1 };
    assert.deepEqual(naiveInducer(q, scores, zeroUp), naiveInducer(q, scores, rankOne));
  });

  it('stays finite for large logits', () => {
    const next = seededUniform(14);
    const [H, N, d, D] = [1, 3, 4, 2];
    const { q, scores } = randomAttention(next, H, N, d, 40);
    const { lambda, delta } = naiveInducer(q, scores, randomInducerParams(next, H, d, D, 2, 2));
    for (const value of [...lambda.flat(), ...delta.flat()]) assert.ok(Number.isFinite(value), `non-finite value ${value}`);
  });
});

describe('naiveLoraQ', () => {
  it('matches a hand-computed correction', () => {
    // rank 1, D = 2, Dq = 2, s = alpha / rank = 2: x Aᵀ = 1, then 2·(1·B) + 2·bias.
    const out = naiveLoraQ([[1, 2]], Float64Array.of(1, 0), Float64Array.of(3, 4), Float64Array.of(1, -1), 2, 1);
    assert.deepEqual(out, [[8, 6]]);
  });

  it('scales by alpha over rank without a bias', () => {
    // rank 2, D = 1, Dq = 1: x Aᵀ = [2, 3], (x Aᵀ) Bᵀ = 2·1 + 3·1 = 5, s = 1 / 2.
    const out = naiveLoraQ([[1]], Float64Array.of(2, 3), Float64Array.of(1, 1), null, 1, 2);
    assert.deepEqual(out, [[2.5]]);
  });
});

describe('naiveLogits on stories260k', () => {
  it('greedy decoding reproduces the known text', async () => {
    const config = await loadModelConfig(STORIES_DIR);
    const { tensors } = await readSafetensorsFile(path.join(STORIES_DIR, 'model.safetensors'));
    const tokenizer = new Tokenizer(
      JSON.parse(await readFile(path.join(STORIES_DIR, 'tokenizer.json'), 'utf8')),
      JSON.parse(await readFile(path.join(STORIES_DIR, 'tokenizer_config.json'), 'utf8')),
    );

    const tokens = [1];
    for (let step = 0; step < 60; step++) {
      const logits = naiveLogits(config, tensors, tokens);
      tokens.push(argmax(logits[logits.length - 1]));
    }
    const readme = await readFile(path.join(STORIES_DIR, 'README.md'), 'utf8');
    assert.ok(readme.includes(STORIES_GREEDY_TEXT), 'the expected text must match the model README');
    assert.equal(tokenizer.decode(tokens, { skip_special_tokens: true }), STORIES_GREEDY_TEXT);
  });
});

describe('naiveLogits on tiny checkpoints', () => {
  let workDir = '';
  const models = new Map<string, { config: ModelConfig; weights: Map<string, HostTensor> }>();
  const tokens = [3, 17, 5, 42, 8, 8, 30];

  before(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'naive-decoder-'));
    models.set('gpt2', await writeTinyCheckpoint(path.join(workDir, 'gpt2'), { family: 'gpt2', seed: 5 }));
    models.set('llama', await writeTinyCheckpoint(path.join(workDir, 'llama'), { family: 'llama', seed: 6, attentionBias: true }));
  });

  after(async () => {
    await rm(workDir, { recursive: true, force: true });
  });

  for (const family of ['gpt2', 'llama']) {
    it(`${family}: zero value path equals the frozen model`, () => {
      const { config, weights } = models.get(family)!;
      const module = randomModule(config, { keyRank: 3, valueRank: 4, loraQ: { rank: 2, alpha: 8, bias: true }, seed: 21 });
      const frozen = naiveLogits(config, weights, tokens);
      assert.equal(maxAbsDifference(naiveLogits(config, weights, tokens, zeroValuePathModule(module)), frozen), 0);
    });

    it(`${family}: random module changes the logits`, () => {
      const { config, weights } = models.get(family)!;
      const module = randomModule(config, { keyRank: 1, valueRank: 3, loraQ: { rank: 2, alpha: 4, bias: false }, seed: 22 });
      const difference = maxAbsDifference(naiveLogits(config, weights, tokens, module), naiveLogits(config, weights, tokens));
      assert.ok(difference > 1e-2, `module changed the logits by only ${difference}`);
    });

    it(`${family}: later tokens do not change earlier logits`, () => {
      const { config, weights } = models.get(family)!;
      const module = randomModule(config, { keyRank: 2, valueRank: 2, seed: 23 });
      const full = naiveLogits(config, weights, tokens, module);
      const prefix = naiveLogits(config, weights, tokens.slice(0, 4), module);
      assert.equal(maxAbsDifference(full.slice(0, 4), prefix), 0);
    });
  }

  it('logprobs are log-softmax of logits', () => {
    const { config, weights } = models.get('gpt2')!;
    const logits = naiveLogits(config, weights, tokens);
    const logprobs = naiveLogprobs(config, weights, tokens);
    for (let i = 0; i < tokens.length; i++) {
      const total = logprobs[i].reduce((sum, value) => sum + Math.exp(value), 0);
      assert.ok(Math.abs(total - 1) < 1e-12, `row ${i} sums to ${total}`);
      // Differences between entries of a row are unchanged by the normalisation.
      assert.ok(Math.abs(logprobs[i][1] - logprobs[i][0] - (logits[i][1] - logits[i][0])) < 1e-12);
    }
  });

  it('llama: GQA equals duplicated KV heads', async () => {
    const { config, weights } = models.get('llama')!;
    assert.ok(config.numKeyValueHeads < config.numHeads, 'the tiny Llama must use grouped-query attention');
    const group = config.numHeads / config.numKeyValueHeads;
    const d = config.headDim;
    const D = config.hiddenSize;

    // Repeat every key/value head `group` times so that query head h reads copy h.
    const expanded = new Map(weights);
    for (let layer = 0; layer < config.numLayers; layer++) {
      for (const projection of ['k_proj', 'v_proj']) {
        const name = `model.layers.${layer}.self_attn.${projection}`;
        const weight = weights.get(`${name}.weight`)!.data;
        const bias = weights.get(`${name}.bias`)!.data;
        const newWeight = new Float32Array(config.numHeads * d * D);
        const newBias = new Float32Array(config.numHeads * d);
        for (let h = 0; h < config.numHeads; h++) {
          const source = Math.floor(h / group);
          newWeight.set(weight.subarray(source * d * D, (source + 1) * d * D), h * d * D);
          newBias.set(bias.subarray(source * d, (source + 1) * d), h * d);
        }
        expanded.set(`${name}.weight`, floatTensor([config.numHeads * d, D], newWeight));
        expanded.set(`${name}.bias`, floatTensor([config.numHeads * d], newBias));
      }
    }
    const multiHeadConfig: ModelConfig = { ...config, numKeyValueHeads: config.numHeads };
    const module = randomModule(config, { keyRank: 2, valueRank: 2, seed: 24 });
    const grouped = naiveLogits(config, weights, tokens, module);
    const multiHead = naiveLogits(multiHeadConfig, expanded, tokens, module);
    assert.ok(maxAbsDifference(grouped, multiHead) < 1e-12);
  });
});

describe('naiveLogits on a hand-built GPT-2', () => {
  it('matches the uniform-attention special case', async () => {
    // One layer, D = 4, two heads, I = 3. Query and key weights are zero, so attention is uniform
    // over the visible tokens. The value and output projections are identities and the LayerNorms
    // plain standardisation. The MLP input weight is zero, so the MLP adds a constant.
    const workDir = await mkdtemp(path.join(os.tmpdir(), 'naive-gpt2-'));
    try {
      const { config, weights } = await writeTinyCheckpoint(workDir, {
        family: 'gpt2', seed: 9, vocabSize: 8, hiddenSize: 4, numLayers: 1, numHeads: 2, intermediateSize: 3, maxPositions: 8, weightScale: 0.5,
      });
      const D = 4;
      const I = 3;
      const identity = (n: number): Float32Array => Float32Array.from({ length: n * n }, (_, k) => (k % (n + 1) === 0 ? 1 : 0));
      const attention = new Float32Array(D * 3 * D);
      for (let c = 0; c < D; c++) attention[c * 3 * D + 2 * D + c] = 1; // value block = identity
      const mlpBias = Float32Array.of(1, -0.5, 2);
      const mlpOut = Float32Array.from({ length: I * D }, (_, k) => (k - 5) / 10);
      const mlpOutBias = Float32Array.of(0.1, 0.2, 0.3, 0.4);
      const set = (name: string, shape: number[], data: Float32Array): void => {
        weights.set(name, floatTensor(shape, data));
      };
      for (const norm of ['h.0.ln_1', 'h.0.ln_2', 'ln_f']) {
        set(`${norm}.weight`, [D], Float32Array.of(1, 1, 1, 1));
        set(`${norm}.bias`, [D], new Float32Array(D));
      }
      set('h.0.attn.c_attn.weight', [D, 3 * D], attention);
      set('h.0.attn.c_attn.bias', [3 * D], new Float32Array(3 * D));
      set('h.0.attn.c_proj.weight', [D, D], identity(D));
      set('h.0.attn.c_proj.bias', [D], new Float32Array(D));
      set('h.0.mlp.c_fc.weight', [D, I], new Float32Array(D * I));
      set('h.0.mlp.c_fc.bias', [I], mlpBias);
      set('h.0.mlp.c_proj.weight', [I, D], mlpOut);
      set('h.0.mlp.c_proj.bias', [D], mlpOutBias);

      const standardise = (row: number[]): number[] => {
        const mean = row.reduce((a, b) => a + b, 0) / row.length;
        const variance = row.reduce((a, b) => a + (b - mean) ** 2, 0) / row.length;
        return row.map((value) => (value - mean) / Math.sqrt(variance + config.normEps));
      };
      // gelu_new(1) = 0.8411919906082768 (the tanh approximation at 1).
      const gelu = (x: number): number => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
      assert.ok(Math.abs(gelu(1) - 0.8411919906082768) < 1e-15);
      const mlpConstant = Array.from({ length: D }, (_, c) =>
        mlpOutBias[c] + [0, 1, 2].reduce((sum, k) => sum + gelu(mlpBias[k]) * mlpOut[k * D + c], 0),
      );

      const tokenIds = [5, 0, 7, 2];
      const wte = weights.get('wte.weight')!.data;
      const wpe = weights.get('wpe.weight')!.data;
      const embedded = tokenIds.map((token, position) => Array.from({ length: D }, (_, c) => wte[token * D + c] + wpe[position * D + c]));
      const normalised = embedded.map(standardise);
      const expected = embedded.map((row, i) => {
        const average = Array.from({ length: D }, (_, c) => normalised.slice(0, i + 1).reduce((sum, r) => sum + r[c], 0) / (i + 1));
        const hidden = row.map((value, c) => value + average[c] + mlpConstant[c]);
        const final = standardise(hidden);
        return Array.from({ length: config.vocabSize }, (_, t) => final.reduce((sum, value, c) => sum + value * wte[t * D + c], 0));
      });
      assert.ok(maxAbsDifference(naiveLogits(config, weights, tokenIds), expected) < 1e-12);
    } finally {
      await rm(workDir, { recursive: true, force: true });
    }
  });
});

describe('writeTinyCheckpoint', () => {
  let workDir = '';
  before(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'tiny-checkpoint-'));
  });
  after(async () => {
    await rm(workDir, { recursive: true, force: true });
  });

  for (const dtype of ['F16', 'BF16'] as const) {
    it(`stores ${dtype} shards that read back as the returned weights`, async () => {
      const dir = path.join(workDir, dtype);
      const { config, weights } = await writeTinyCheckpoint(dir, { family: 'gpt2', dtype, shards: 3, transformerPrefix: true, seed: 4 });
      assert.equal(config.family, 'gpt2');
      const index = JSON.parse(await readFile(path.join(dir, 'model.safetensors.index.json'), 'utf8')) as {
        weight_map: Record<string, string>;
      };
      const files = [...new Set(Object.values(index.weight_map))].sort();
      assert.deepEqual(files, ['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors']);

      const stored = new Map<string, HostTensor>();
      for (const file of files) {
        for (const [name, tensor] of (await readSafetensorsFile(path.join(dir, file))).tensors) stored.set(name, tensor);
      }
      assert.equal(stored.size, weights.size);
      for (const [name, tensor] of weights) {
        const read = stored.get(`transformer.${name}`);
        assert.ok(read, `transformer.${name} is missing from the shards`);
        assert.equal(index.weight_map[`transformer.${name}`] !== undefined, true);
        assert.deepEqual(read.shape, tensor.shape);
        assert.deepEqual(read.data, tensor.data, `${name} differs after the ${dtype} round trip`);
      }
    });
  }

  it('writes a Llama config that parses to the requested sizes', async () => {
    const dir = path.join(workDir, 'llama');
    const { config, weights } = await writeTinyCheckpoint(dir, {
      family: 'llama', hiddenSize: 24, numHeads: 6, numKeyValueHeads: 2, numLayers: 3, vocabSize: 40, tieWordEmbeddings: false,
    });
    assert.equal(config.headDim, 4);
    assert.equal(config.numKeyValueHeads, 2);
    assert.equal(config.numLayers, 3);
    assert.equal(config.vocabSize, 40);
    assert.deepEqual((await loadModelConfig(dir)).hiddenSize, 24);
    assert.deepEqual(weights.get('lm_head.weight')?.shape, [40, 24]);
    assert.deepEqual(weights.get('model.layers.2.self_attn.k_proj.weight')?.shape, [8, 24]);
  });
});
