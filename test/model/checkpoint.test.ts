import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CheckpointError, expectedTensorShapes, loadCheckpoint } from '../../src/model/checkpoint.js';
import { ModelConfigError, parseModelConfig } from '../../src/model/config.js';
import { serializeSafetensors, type SafetensorsDType } from '../../src/model/safetensors.js';
import { floatTensor, type HostTensor } from '../../src/model/tensor.js';

const STORIES_DIR = '/work/shared/models/stories260k';

// Tiny GPT-2: V=11, D=4, two blocks, 2 heads, P=6 positions, I=4*D=16.
const GPT2_CONFIG = {
  model_type: 'gpt2',
  vocab_size: 11,
  n_embd: 4,
  n_layer: 2,
  n_head: 2,
  n_positions: 6,
};

/** GPT-2 tensor names and shapes for GPT2_CONFIG, written out by hand. */
function gpt2Shapes(): [string, number[]][] {
  const shapes: [string, number[]][] = [
    ['wte.weight', [11, 4]],
    ['wpe.weight', [6, 4]],
  ];
  for (const i of [0, 1]) {
    shapes.push(
      [`h.${i}.ln_1.weight`, [4]],
      [`h.${i}.ln_1.bias`, [4]],
      [`h.${i}.attn.c_attn.weight`, [4, 12]],
      [`h.${i}.attn.c_attn.bias`, [12]],
      [`h.${i}.attn.c_proj.weight`, [4, 4]],
      [`h.${i}.attn.c_proj.bias`, [4]],
      [`h.${i}.ln_2.weight`, [4]],
      [`h.${i}.ln_2.bias`, [4]],
      [`h.${i}.mlp.c_fc.weight`, [4, 16]],
      [`h.${i}.mlp.c_fc.bias`, [16]],
      [`h.${i}.mlp.c_proj.weight`, [16, 4]],
      [`h.${i}.mlp.c_proj.bias`, [4]],
    );
  }
  shapes.push(['ln_f.weight', [4]], ['ln_f.bias', [4]]);
  return shapes;
}

// wte 44 + wpe 24 + 2 blocks * (ln 8 + c_attn 60 + c_proj 20 + ln 8 + c_fc 80 + c_proj 68) + ln_f 8.
const GPT2_PARAMETER_COUNT = 44 + 24 + 2 * 244 + 8;

// Tiny Llama: V=13, D=8, I=12, two layers, H=4 query heads and KVH=2 key/value heads of size d=2.
const LLAMA_CONFIG = {
  model_type: 'llama',
  vocab_size: 13,
  hidden_size: 8,
  intermediate_size: 12,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 16,
  tie_word_embeddings: false,
};

/** Llama tensor names and shapes for LLAMA_CONFIG, written out by hand. */
function llamaShapes(options: { biases?: boolean } = {}): [string, number[]][] {
  const shapes: [string, number[]][] = [['model.embed_tokens.weight', [13, 8]]];
  for (const i of [0, 1]) {
    const layer = `model.layers.${i}`;
    shapes.push(
      [`${layer}.input_layernorm.weight`, [8]],
      [`${layer}.self_attn.q_proj.weight`, [8, 8]],
      [`${layer}.self_attn.k_proj.weight`, [4, 8]],
      [`${layer}.self_attn.v_proj.weight`, [4, 8]],
    );
    if (options.biases) {
      shapes.push(
        [`${layer}.self_attn.q_proj.bias`, [8]],
        [`${layer}.self_attn.k_proj.bias`, [4]],
        [`${layer}.self_attn.v_proj.bias`, [4]],
      );
    }
    shapes.push([`${layer}.self_attn.o_proj.weight`, [8, 8]]);
    if (options.biases) shapes.push([`${layer}.self_attn.o_proj.bias`, [8]]);
    shapes.push(
      [`${layer}.post_attention_layernorm.weight`, [8]],
      [`${layer}.mlp.gate_proj.weight`, [12, 8]],
      [`${layer}.mlp.up_proj.weight`, [12, 8]],
      [`${layer}.mlp.down_proj.weight`, [8, 12]],
    );
    if (options.biases) {
      shapes.push(
        [`${layer}.mlp.gate_proj.bias`, [12]],
        [`${layer}.mlp.up_proj.bias`, [12]],
        [`${layer}.mlp.down_proj.bias`, [8]],
      );
    }
  }
  shapes.push(['model.norm.weight', [8]], ['lm_head.weight', [13, 8]]);
  return shapes;
}

// embed 104 + 2 layers * (norm 8 + q 64 + k 32 + v 32 + o 64 + norm 8 + 3 * 96 MLP) + norm 8 + lm_head 104.
const LLAMA_PARAMETER_COUNT = 104 + 2 * 496 + 8 + 104;

/** Deterministic values in [-0.5, 0.5) from a linear congruential generator. */
function makeRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return (state & 0x7fffffff) / 2 ** 31 - 0.5;
  };
}

function randomTensors(shapes: readonly [string, number[]][], seed: number): Map<string, HostTensor> {
  const random = makeRandom(seed);
  const tensors = new Map<string, HostTensor>();
  for (const [name, shape] of shapes) {
    const size = shape.reduce((a, b) => a * b, 1);
    tensors.set(name, floatTensor(shape, Float32Array.from({ length: size }, random)));
  }
  return tensors;
}

function withPrefix(tensors: ReadonlyMap<string, HostTensor>, prefix: string): Map<string, HostTensor> {
  return new Map([...tensors].map(([name, tensor]) => [prefix + name, tensor]));
}

/** Rounds to the nearest value with `significandBits` bits (implicit bit included), ties to even. */
function roundToPrecision(value: number, significandBits: number, minExponent: number): number {
  if (value === 0) return value;
  const magnitude = Math.abs(value);
  let exponent = 0;
  while (2 ** exponent > magnitude) exponent--;
  while (2 ** (exponent + 1) <= magnitude) exponent++;
  const ulp = 2 ** (Math.max(exponent, minExponent) - (significandBits - 1));
  const scaled = magnitude / ulp;
  const floor = Math.floor(scaled);
  const fraction = scaled - floor;
  let rounded = floor;
  if (fraction > 0.5 || (fraction === 0.5 && floor % 2 === 1)) rounded = floor + 1;
  return Math.sign(value) * rounded * ulp;
}

/** Float16 has 11 significand bits and subnormals below 2^-14. */
const roundToHalf = (value: number): number => roundToPrecision(value, 11, -14);
/** Bfloat16 has 8 significand bits and the exponent range of float32. */
const roundToBfloat16 = (value: number): number => roundToPrecision(value, 8, -126);

let scratchRoot: string;
let folderCount = 0;

async function makeFolder(files: Record<string, string | Uint8Array>): Promise<string> {
  const dir = path.join(scratchRoot, `checkpoint-${folderCount++}`);
  await mkdir(dir);
  for (const [name, contents] of Object.entries(files)) await writeFile(path.join(dir, name), contents);
  return dir;
}

async function writeSingleFile(
  config: object,
  tensors: ReadonlyMap<string, HostTensor>,
  dtype: SafetensorsDType = 'F32',
): Promise<string> {
  return makeFolder({
    'config.json': JSON.stringify(config),
    'model.safetensors': serializeSafetensors(tensors, { format: 'pt' }, dtype),
  });
}

/** Writes a two-shard checkpoint with `firstShardNames` in shard 1 and the other tensors in shard 2. */
async function writeSharded(
  config: object,
  tensors: ReadonlyMap<string, HostTensor>,
  firstShardNames: ReadonlySet<string>,
): Promise<{ dir: string; shards: [string, string] }> {
  const shards: [string, string] = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
  const first = new Map([...tensors].filter(([name]) => firstShardNames.has(name)));
  const second = new Map([...tensors].filter(([name]) => !firstShardNames.has(name)));
  const weightMap: Record<string, string> = {};
  for (const name of first.keys()) weightMap[name] = shards[0];
  for (const name of second.keys()) weightMap[name] = shards[1];
  const dir = await makeFolder({
    'config.json': JSON.stringify(config),
    'model.safetensors.index.json': JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }),
    [shards[0]]: serializeSafetensors(first),
    [shards[1]]: serializeSafetensors(second),
  });
  return { dir, shards };
}

function assertWeightsEqual(actual: ReadonlyMap<string, HostTensor>, expected: ReadonlyMap<string, HostTensor>): void {
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort());
  for (const [name, tensor] of expected) {
    const loaded = actual.get(name)!;
    assert.deepEqual(loaded.shape, tensor.shape, `shape of ${name}`);
    assert.deepEqual(loaded.data, tensor.data, `values of ${name}`);
  }
}

/** Asserts that `promise` rejects with a CheckpointError whose message contains every fragment. */
async function assertCheckpointError(promise: Promise<unknown>, fragments: readonly string[]): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof CheckpointError, `expected CheckpointError, got ${String(error)}`);
    for (const fragment of fragments) {
      assert.ok(error.message.includes(fragment), `message ${JSON.stringify(error.message)} lacks ${JSON.stringify(fragment)}`);
    }
    return true;
  });
}

before(async () => {
  scratchRoot = await mkdtemp(path.join(os.tmpdir(), 'checkpoint-test-'));
});

after(async () => {
  await rm(scratchRoot, { recursive: true, force: true });
});

describe('expectedTensorShapes', () => {
  it('GPT-2 tied head', () => {
    const shapes = expectedTensorShapes(parseModelConfig(GPT2_CONFIG));
    assert.deepEqual([...shapes].sort(), gpt2Shapes().sort());
  });

  it('GPT-2 untied head adds lm_head', () => {
    const shapes = expectedTensorShapes(parseModelConfig({ ...GPT2_CONFIG, tie_word_embeddings: false }));
    assert.deepEqual(shapes.get('lm_head.weight'), [11, 4]);
    assert.equal(shapes.size, gpt2Shapes().length + 1);
  });

  it('Llama without biases', () => {
    const shapes = expectedTensorShapes(parseModelConfig(LLAMA_CONFIG));
    assert.deepEqual([...shapes].sort(), llamaShapes().sort());
  });

  it('Llama with attention and MLP biases', () => {
    const shapes = expectedTensorShapes(parseModelConfig({ ...LLAMA_CONFIG, attention_bias: true, mlp_bias: true }));
    assert.deepEqual([...shapes].sort(), llamaShapes({ biases: true }).sort());
  });

  it('Llama tied head has no lm_head', () => {
    const shapes = expectedTensorShapes(parseModelConfig({ ...LLAMA_CONFIG, tie_word_embeddings: true }));
    assert.equal(shapes.has('lm_head.weight'), false);
  });
});

describe('loadCheckpoint GPT-2', () => {
  it('loads names without prefix and skips buffers', async () => {
    const tensors = randomTensors(gpt2Shapes(), 1);
    const stored = new Map(tensors);
    stored.set('h.0.attn.bias', floatTensor([1, 1, 6, 6]));
    stored.set('h.1.attn.masked_bias', floatTensor([], Float32Array.of(-1e4)));
    const dir = await writeSingleFile(GPT2_CONFIG, stored);

    const checkpoint = await loadCheckpoint(dir);
    assert.equal(checkpoint.dir, dir);
    assert.equal(checkpoint.config.family, 'gpt2');
    assertWeightsEqual(checkpoint.weights, tensors);
    assert.equal(checkpoint.parameterCount, GPT2_PARAMETER_COUNT);
    assert.deepEqual(checkpoint.weightFiles, [path.join(dir, 'model.safetensors')]);
    assert.deepEqual(checkpoint.ignoredTensors, []);
  });

  it('strips the transformer prefix', async () => {
    const tensors = randomTensors(gpt2Shapes(), 2);
    const stored = withPrefix(tensors, 'transformer.');
    stored.set('transformer.h.0.attn.bias', floatTensor([1, 1, 6, 6]));
    const dir = await writeSingleFile(GPT2_CONFIG, stored);

    const checkpoint = await loadCheckpoint(dir);
    assertWeightsEqual(checkpoint.weights, tensors);
    assert.deepEqual(checkpoint.ignoredTensors, []);
  });

  it('untied head loads lm_head', async () => {
    const tensors = randomTensors([...gpt2Shapes(), ['lm_head.weight', [11, 4]]], 3);
    const stored = withPrefix(new Map([...tensors].filter(([name]) => name !== 'lm_head.weight')), 'transformer.');
    stored.set('lm_head.weight', tensors.get('lm_head.weight')!);
    const dir = await writeSingleFile({ ...GPT2_CONFIG, tie_word_embeddings: false }, stored);

    const checkpoint = await loadCheckpoint(dir);
    assertWeightsEqual(checkpoint.weights, tensors);
    assert.equal(checkpoint.parameterCount, GPT2_PARAMETER_COUNT + 44);
  });

  it('tied head ignores a stored lm_head', async () => {
    const tensors = randomTensors(gpt2Shapes(), 4);
    const stored = new Map(tensors);
    stored.set('lm_head.weight', floatTensor([11, 4]));
    stored.set('extra.scale', floatTensor([2]));
    const dir = await writeSingleFile(GPT2_CONFIG, stored);

    const checkpoint = await loadCheckpoint(dir);
    assertWeightsEqual(checkpoint.weights, tensors);
    assert.deepEqual(checkpoint.ignoredTensors, ['extra.scale', 'lm_head.weight']);
  });

  it('F16 weights widen to rounded values', async () => {
    const tensors = randomTensors(gpt2Shapes(), 5);
    const dir = await writeSingleFile(GPT2_CONFIG, tensors, 'F16');

    const checkpoint = await loadCheckpoint(dir);
    for (const [name, tensor] of tensors) {
      const expected = Float32Array.from(tensor.data, roundToHalf);
      assert.deepEqual(checkpoint.weights.get(name)!.data, expected, `values of ${name}`);
    }
    // The rounding must change some values, or this test would not tell F16 from F32.
    const original = tensors.get('wte.weight')!.data;
    assert.notDeepEqual(checkpoint.weights.get('wte.weight')!.data, original);
  });

  it('BF16 weights widen to rounded values', async () => {
    const tensors = randomTensors(gpt2Shapes(), 6);
    const dir = await writeSingleFile(GPT2_CONFIG, tensors, 'BF16');

    const checkpoint = await loadCheckpoint(dir);
    for (const [name, tensor] of tensors) {
      const expected = Float32Array.from(tensor.data, roundToBfloat16);
      assert.deepEqual(checkpoint.weights.get(name)!.data, expected, `values of ${name}`);
    }
    const original = tensors.get('wte.weight')!.data;
    assert.notDeepEqual(checkpoint.weights.get('wte.weight')!.data, original);
  });
});

describe('loadCheckpoint Llama', () => {
  it('loads a sharded checkpoint through its index', async () => {
    const tensors = randomTensors(llamaShapes(), 7);
    const stored = new Map(tensors);
    stored.set('model.layers.0.self_attn.rotary_emb.inv_freq', floatTensor([1], Float32Array.of(1)));
    stored.set('model.layers.2.mlp.up_proj.weight', floatTensor([12, 8]));
    const firstShard = new Set(['model.embed_tokens.weight', ...[...tensors.keys()].filter((name) => name.startsWith('model.layers.0.'))]);
    const { dir, shards } = await writeSharded(LLAMA_CONFIG, stored, firstShard);

    const checkpoint = await loadCheckpoint(dir);
    assert.equal(checkpoint.config.family, 'llama');
    assertWeightsEqual(checkpoint.weights, tensors);
    assert.equal(checkpoint.parameterCount, LLAMA_PARAMETER_COUNT);
    assert.deepEqual(checkpoint.weightFiles, [path.join(dir, shards[0]), path.join(dir, shards[1])]);
    assert.deepEqual(checkpoint.ignoredTensors, ['model.layers.2.mlp.up_proj.weight']);
  });

  it('loads attention and MLP biases', async () => {
    const config = { ...LLAMA_CONFIG, attention_bias: true, mlp_bias: true };
    const tensors = randomTensors(llamaShapes({ biases: true }), 8);
    const dir = await writeSingleFile(config, tensors);

    const checkpoint = await loadCheckpoint(dir);
    assertWeightsEqual(checkpoint.weights, tensors);
    // Biases: 2 layers * (q 8 + k 4 + v 4 + o 8 + gate 12 + up 12 + down 8).
    assert.equal(checkpoint.parameterCount, LLAMA_PARAMETER_COUNT + 2 * 56);
  });

  it('tied head ignores a stored lm_head', async () => {
    const shapes = llamaShapes().filter(([name]) => name !== 'lm_head.weight');
    const tensors = randomTensors(shapes, 9);
    const stored = new Map(tensors);
    stored.set('lm_head.weight', floatTensor([13, 8]));
    const dir = await writeSingleFile({ ...LLAMA_CONFIG, tie_word_embeddings: true }, stored);

    const checkpoint = await loadCheckpoint(dir);
    assertWeightsEqual(checkpoint.weights, tensors);
    assert.deepEqual(checkpoint.ignoredTensors, ['lm_head.weight']);
    assert.equal(checkpoint.parameterCount, LLAMA_PARAMETER_COUNT - 104);
  });

  it('stories260k loads with its parameter count', async () => {
    const checkpoint = await loadCheckpoint(STORIES_DIR);
    // V=512, D=64, L=5, H=8, KVH=4, d=8, I=172, tied head:
    // embed 512*64 + 5 * (2*64 norms + q 64*64 + k,v 2*32*64 + o 64*64 + MLP 3*172*64) + final norm 64.
    const expected = 512 * 64 + 5 * (2 * 64 + 64 * 64 + 2 * 32 * 64 + 64 * 64 + 3 * 172 * 64) + 64;
    assert.equal(expected, 260032);
    assert.equal(checkpoint.parameterCount, expected);
    assert.deepEqual(checkpoint.weights.get('model.embed_tokens.weight')!.shape, [512, 64]);
    assert.deepEqual(checkpoint.weights.get('model.layers.4.self_attn.q_proj.weight')!.shape, [64, 64]);
    assert.deepEqual(checkpoint.weights.get('model.layers.0.self_attn.k_proj.weight')!.shape, [32, 64]);
    assert.deepEqual(checkpoint.weights.get('model.layers.2.mlp.gate_proj.weight')!.shape, [172, 64]);
    assert.deepEqual(checkpoint.weights.get('model.layers.2.mlp.down_proj.weight')!.shape, [64, 172]);
    assert.deepEqual(checkpoint.weights.get('model.norm.weight')!.shape, [64]);
    assert.equal(checkpoint.weights.has('lm_head.weight'), false);
    assert.equal(checkpoint.weights.size, 1 + 5 * 9 + 1);
    assert.deepEqual(checkpoint.weightFiles, [path.join(STORIES_DIR, 'model.safetensors')]);
    assert.deepEqual(checkpoint.ignoredTensors, []);
  });
});

describe('loadCheckpoint errors', () => {
  it('missing folder', async () => {
    const dir = path.join(scratchRoot, 'does-not-exist');
    await assertCheckpointError(loadCheckpoint(dir), [dir, 'not found']);
  });

  it('path that is a file', async () => {
    const dir = await makeFolder({ 'config.json': '{}' });
    const file = path.join(dir, 'config.json');
    await assertCheckpointError(loadCheckpoint(file), [file, 'not a folder']);
  });

  it('missing config.json lists the files found', async () => {
    const dir = await makeFolder({ 'model.safetensors': serializeSafetensors(randomTensors(gpt2Shapes(), 10)) });
    await assertCheckpointError(loadCheckpoint(dir), [dir, 'config.json', 'found: model.safetensors']);
  });

  it('missing weights list the files found', async () => {
    const dir = await makeFolder({ 'config.json': JSON.stringify(GPT2_CONFIG), 'pytorch_model.bin': 'x' });
    await assertCheckpointError(loadCheckpoint(dir), [
      dir,
      'model.safetensors',
      'model.safetensors.index.json',
      'found: config.json, pytorch_model.bin',
    ]);
  });

  it('missing tensor names it and the file', async () => {
    const tensors = randomTensors(gpt2Shapes(), 11);
    tensors.delete('h.1.mlp.c_fc.bias');
    const dir = await writeSingleFile(GPT2_CONFIG, tensors);
    await assertCheckpointError(loadCheckpoint(dir), ['"h.1.mlp.c_fc.bias"', 'model.safetensors']);
  });

  it('missing Llama bias when attention_bias is set', async () => {
    const config = { ...LLAMA_CONFIG, attention_bias: true, mlp_bias: true };
    const tensors = randomTensors(llamaShapes({ biases: true }), 12);
    tensors.delete('model.layers.1.self_attn.k_proj.bias');
    const dir = await writeSingleFile(config, tensors);
    await assertCheckpointError(loadCheckpoint(dir), ['"model.layers.1.self_attn.k_proj.bias"', 'attention_bias']);
  });

  it('missing tensor in a sharded checkpoint lists the shards', async () => {
    const tensors = randomTensors(llamaShapes(), 13);
    tensors.delete('model.norm.weight');
    const { dir, shards } = await writeSharded(LLAMA_CONFIG, tensors, new Set(['model.embed_tokens.weight']));
    await assertCheckpointError(loadCheckpoint(dir), ['"model.norm.weight"', shards[0], shards[1]]);
  });

  it('wrong shape names expected and found', async () => {
    const tensors = randomTensors(gpt2Shapes(), 14);
    tensors.set('wpe.weight', floatTensor([7, 4]));
    const dir = await writeSingleFile(GPT2_CONFIG, tensors);
    await assertCheckpointError(loadCheckpoint(dir), ['"wpe.weight"', 'has shape [7, 4]', 'expected [6, 4]', 'model.safetensors']);
  });

  it('wrong shape keeps the stored name', async () => {
    const tensors = randomTensors(gpt2Shapes(), 15);
    tensors.set('h.0.attn.c_attn.weight', floatTensor([12, 4]));
    const dir = await writeSingleFile(GPT2_CONFIG, withPrefix(tensors, 'transformer.'));
    await assertCheckpointError(loadCheckpoint(dir), ['"transformer.h.0.attn.c_attn.weight"', '[12, 4]', '[4, 12]']);
  });

  it('missing shard', async () => {
    const tensors = randomTensors(llamaShapes(), 16);
    const { dir, shards } = await writeSharded(LLAMA_CONFIG, tensors, new Set(['model.embed_tokens.weight']));
    await rm(path.join(dir, shards[1]));
    await assertCheckpointError(loadCheckpoint(dir), ['missing shard', path.join(dir, shards[1]), 'model.safetensors.index.json']);
  });

  it('tensor absent from the shard the index names', async () => {
    const tensors = randomTensors(llamaShapes(), 17);
    const { dir, shards } = await writeSharded(LLAMA_CONFIG, tensors, new Set(['model.embed_tokens.weight']));
    const indexFile = path.join(dir, 'model.safetensors.index.json');
    const weightMap: Record<string, string> = {};
    for (const name of tensors.keys()) weightMap[name] = name === 'model.norm.weight' ? shards[0] : shards[1];
    weightMap['model.embed_tokens.weight'] = shards[0];
    await writeFile(indexFile, JSON.stringify({ weight_map: weightMap }));
    await assertCheckpointError(loadCheckpoint(dir), ['"model.norm.weight"', path.join(dir, shards[0])]);
  });

  it('tensor listed in the index but in no shard', async () => {
    const tensors = randomTensors(llamaShapes(), 18);
    const { dir, shards } = await writeSharded(LLAMA_CONFIG, tensors, new Set(['model.embed_tokens.weight']));
    const weightMap: Record<string, string> = {};
    for (const name of tensors.keys()) weightMap[name] = name === 'model.embed_tokens.weight' ? shards[0] : shards[1];
    weightMap['model.layers.9.extra.weight'] = shards[1];
    await writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
    await assertCheckpointError(loadCheckpoint(dir), ['"model.layers.9.extra.weight"', 'no shard contains it']);
  });

  it('index that is not valid JSON', async () => {
    const dir = await makeFolder({ 'config.json': JSON.stringify(LLAMA_CONFIG), 'model.safetensors.index.json': '{"weight_map": ' });
    await assertCheckpointError(loadCheckpoint(dir), ['model.safetensors.index.json', 'not valid JSON']);
  });

  it('index without weight_map', async () => {
    const dir = await makeFolder({ 'config.json': JSON.stringify(LLAMA_CONFIG), 'model.safetensors.index.json': '{"metadata": {}}' });
    await assertCheckpointError(loadCheckpoint(dir), ['model.safetensors.index.json', 'weight_map']);
  });

  it('index shard outside the folder', async () => {
    const dir = await makeFolder({
      'config.json': JSON.stringify(LLAMA_CONFIG),
      'model.safetensors.index.json': JSON.stringify({ weight_map: { 'model.norm.weight': '../elsewhere.safetensors' } }),
    });
    await assertCheckpointError(loadCheckpoint(dir), ['../elsewhere.safetensors', 'not a file name inside']);
  });

  it('unknown model_type passes through', async () => {
    const dir = await makeFolder({ 'config.json': JSON.stringify({ model_type: 'bert' }), 'model.safetensors': serializeSafetensors({}) });
    await assert.rejects(loadCheckpoint(dir), (error: unknown) => {
      assert.ok(error instanceof ModelConfigError);
      assert.match(error.message, /unknown model_type "bert"/);
      return true;
    });
  });

  it('same tensor with and without prefix', async () => {
    const tensors = randomTensors(gpt2Shapes(), 19);
    const stored = new Map(tensors);
    stored.set('transformer.wte.weight', tensors.get('wte.weight')!);
    const dir = await writeSingleFile(GPT2_CONFIG, stored);
    await assertCheckpointError(loadCheckpoint(dir), ['"wte.weight"', '"transformer.wte.weight"']);
  });

  it('same tensor in two shards', async () => {
    const tensors = randomTensors(llamaShapes(), 20);
    const { dir, shards } = await writeSharded(LLAMA_CONFIG, tensors, new Set(['model.embed_tokens.weight']));
    const second = new Map([...tensors].filter(([name]) => name !== 'model.embed_tokens.weight'));
    second.set('model.embed_tokens.weight', tensors.get('model.embed_tokens.weight')!);
    await writeFile(path.join(dir, shards[1]), serializeSafetensors(second));
    await assertCheckpointError(loadCheckpoint(dir), ['"model.embed_tokens.weight"', shards[0], shards[1]]);
  });

  it('missing o_proj bias is named', async () => {
    const tensors = randomTensors(llamaShapes({ biases: true }), 21);
    tensors.delete('model.layers.0.self_attn.o_proj.bias');
    const dir = await writeSingleFile({ ...LLAMA_CONFIG, attention_bias: true, mlp_bias: true }, tensors);
    await assertCheckpointError(loadCheckpoint(dir), ['"model.layers.0.self_attn.o_proj.bias"']);
  });

  it('Qwen2 has q/k/v biases but no o_proj bias', () => {
    const shapes = expectedTensorShapes(parseModelConfig({ ...LLAMA_CONFIG, model_type: 'qwen2' }));
    assert.ok(shapes.has('model.layers.0.self_attn.q_proj.bias'));
    assert.ok(!shapes.has('model.layers.0.self_attn.o_proj.bias'));
  });
});
