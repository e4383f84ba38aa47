import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { parseModelConfig } from '../../src/model/config.js';
import {
  inducerParameterCount,
  inducerTensorShapes,
  initInducerTensors,
  InducerHyperParamsError,
  type InducerHyperParams,
} from '../../src/tuning/inducer.js';

const gpt2Small = parseModelConfig({
  model_type: 'gpt2',
  n_embd: 768,
  n_layer: 12,
  n_head: 12,
  vocab_size: 50257,
  n_positions: 1024,
});

const gpt2Medium = parseModelConfig({
  model_type: 'gpt2',
  n_embd: 1024,
  n_layer: 24,
  n_head: 16,
  vocab_size: 50257,
  n_positions: 1024,
});

/** A tiny GPT-2-shaped model: D = 16, H = 4, d = 4, L = 2. */
const tinyGpt2 = parseModelConfig({
  model_type: 'gpt2',
  n_embd: 16,
  n_layer: 2,
  n_head: 4,
  vocab_size: 50,
  n_positions: 32,
});

/** A Llama-shaped model whose query width H * d = 64 differs from its width D = 32. */
const wideQueryLlama = parseModelConfig({
  model_type: 'llama',
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 1,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 16,
  vocab_size: 50,
  max_position_embeddings: 32,
});

describe('inducerParameterCount', () => {
  // Expected totals are the GPT-2 parameter budgets of the released inducer configs.
  it('matches GPT-2 small inducer-no-lora', () => {
    assert.equal(inducerParameterCount(gpt2Small, { keyRank: 10, valueRank: 15, loraQ: null }), 2_003_472);
  });

  it('matches GPT-2 small inducer-lora', () => {
    const hp: InducerHyperParams = { keyRank: 5, valueRank: 12, loraQ: { rank: 24, alpha: 32, bias: true } };
    assert.equal(inducerParameterCount(gpt2Small, hp), 2_002_320);
  });

  it('matches GPT-2 small inducer-mam without its FFN adapter', () => {
    // Per layer: key 5,412 + value 70,740 + LoRA-Q 25,344 = 101,496.
    const hp: InducerHyperParams = { keyRank: 3, valueRank: 7, loraQ: { rank: 16, alpha: 32, bias: true } };
    assert.equal(inducerParameterCount(gpt2Small, hp), 12 * 101_496);
  });

  it('matches GPT-2 medium inducer-no-lora', () => {
    assert.equal(inducerParameterCount(gpt2Medium, { keyRank: 10, valueRank: 15, loraQ: null }), 6_817_152);
  });

  it('matches RoBERTa-base dims with LoRA-Q without bias', () => {
    // RoBERTa-base has GPT-2 small's dimensions; its LoRA has no bias: 3,864 + 40,752 + 6,144 per layer.
    const hp: InducerHyperParams = { keyRank: 2, valueRank: 4, loraQ: { rank: 4, alpha: 32, bias: false } };
    assert.equal(inducerParameterCount(gpt2Small, hp), 609_120);
  });

  it('has no key parameters for keyRank 0 and 1', () => {
    // Value MLP only: r_v (D + H + H D) + D per layer.
    const perLayer = 15 * (768 + 12 + 12 * 768) + 768;
    assert.equal(inducerParameterCount(gpt2Small, { keyRank: 0, valueRank: 15, loraQ: null }), 12 * perLayer);
    assert.equal(inducerParameterCount(gpt2Small, { keyRank: 1, valueRank: 15, loraQ: null }), 12 * perLayer);
  });
});

describe('inducerTensorShapes', () => {
  it('lists layer 0 in table order', () => {
    const shapes = inducerTensorShapes(tinyGpt2, { keyRank: 3, valueRank: 5, loraQ: { rank: 2, alpha: 4, bias: true } });
    const layer0 = [...shapes].filter(([name]) => name.startsWith('layers.0.'));
    assert.deepEqual(layer0, [
      ['layers.0.inducer.key.down.weight', [4, 4, 3]],
      ['layers.0.inducer.key.down.bias', [4, 3]],
      ['layers.0.inducer.key.up.weight', [4, 3, 4]],
      ['layers.0.inducer.key.up.bias', [4, 4]],
      ['layers.0.inducer.value.down.weight', [4, 4, 5]],
      ['layers.0.inducer.value.down.bias', [4, 5]],
      ['layers.0.inducer.value.up.weight', [4, 5, 16]],
      ['layers.0.inducer.value.up.bias', [16]],
      ['layers.0.lora_q.A', [2, 16]],
      ['layers.0.lora_q.B', [16, 2]],
      ['layers.0.lora_q.bias', [16]],
    ]);
  });

  it('orders tensors layer by layer', () => {
    const names = [...inducerTensorShapes(tinyGpt2, { keyRank: 0, valueRank: 2, loraQ: null }).keys()];
    assert.deepEqual(names, [
      'layers.0.inducer.value.down.weight',
      'layers.0.inducer.value.down.bias',
      'layers.0.inducer.value.up.weight',
      'layers.0.inducer.value.up.bias',
      'layers.1.inducer.value.down.weight',
      'layers.1.inducer.value.down.bias',
      'layers.1.inducer.value.up.weight',
      'layers.1.inducer.value.up.bias',
    ]);
  });

  it('adds key tensors only from keyRank 2', () => {
    for (const keyRank of [0, 1]) {
      const names = [...inducerTensorShapes(tinyGpt2, { keyRank, valueRank: 2, loraQ: null }).keys()];
      assert.equal(names.filter((name) => name.includes('.key.')).length, 0, `keyRank ${keyRank}`);
    }
    const names = [...inducerTensorShapes(tinyGpt2, { keyRank: 2, valueRank: 2, loraQ: null }).keys()];
    assert.equal(names.filter((name) => name.includes('.key.')).length, 2 * 4);
  });

  it('omits lora_q.bias when bias is false', () => {
    const shapes = inducerTensorShapes(tinyGpt2, { keyRank: 2, valueRank: 2, loraQ: { rank: 2, alpha: 1, bias: false } });
    assert.ok(shapes.has('layers.1.lora_q.A'));
    assert.ok(shapes.has('layers.1.lora_q.B'));
    assert.ok(!shapes.has('layers.0.lora_q.bias'));
    assert.ok(!shapes.has('layers.1.lora_q.bias'));
  });

  it('uses the query width H * d for Llama', () => {
    const shapes = inducerTensorShapes(wideQueryLlama, { keyRank: 2, valueRank: 3, loraQ: { rank: 5, alpha: 8, bias: true } });
    assert.deepEqual(shapes.get('layers.0.inducer.key.down.weight'), [4, 16, 2]);
    assert.deepEqual(shapes.get('layers.0.inducer.key.up.bias'), [4, 16]);
    assert.deepEqual(shapes.get('layers.0.inducer.value.up.weight'), [4, 3, 32]);
    assert.deepEqual(shapes.get('layers.0.inducer.value.up.bias'), [32]);
    assert.deepEqual(shapes.get('layers.0.lora_q.A'), [5, 32]);
    assert.deepEqual(shapes.get('layers.0.lora_q.B'), [64, 5]);
    assert.deepEqual(shapes.get('layers.0.lora_q.bias'), [64]);
  });

  const invalidCases: { field: string; hp: InducerHyperParams }[] = [
    { field: 'keyRank', hp: { keyRank: -1, valueRank: 2, loraQ: null } },
    { field: 'keyRank', hp: { keyRank: 2.5, valueRank: 2, loraQ: null } },
    { field: 'valueRank', hp: { keyRank: 2, valueRank: 0, loraQ: null } },
    { field: 'valueRank', hp: { keyRank: 2, valueRank: Number.NaN, loraQ: null } },
    { field: 'loraQ.rank', hp: { keyRank: 2, valueRank: 2, loraQ: { rank: 0, alpha: 1, bias: false } } },
    { field: 'loraQ.rank', hp: { keyRank: 2, valueRank: 2, loraQ: { rank: 1.5, alpha: 1, bias: false } } },
    { field: 'loraQ.alpha', hp: { keyRank: 2, valueRank: 2, loraQ: { rank: 1, alpha: 0, bias: false } } },
    { field: 'loraQ.alpha', hp: { keyRank: 2, valueRank: 2, loraQ: { rank: 1, alpha: Number.POSITIVE_INFINITY, bias: false } } },
  ];
  for (const { field, hp } of invalidCases) {
    it(`rejects invalid ${field} ${JSON.stringify(hp)}`, () => {
      assert.throws(
        () => inducerTensorShapes(tinyGpt2, hp),
        (error: unknown) => error instanceof InducerHyperParamsError && error.message.includes(`invalid ${field} `),
      );
    });
  }
});

/** Integrates f over [a, b] with Simpson's rule on `steps` (even) intervals. */
function simpson(f: (x: number) => number, a: number, b: number, steps: number): number {
  const h = (b - a) / steps;
  let sum = f(a) + f(b);
  for (let i = 1; i < steps; i++) sum += f(a + i * h) * (i % 2 === 1 ? 4 : 2);
  return (sum * h) / 3;
}

const standardNormalDensity = (z: number): number => Math.exp(-0.5 * z * z) / Math.sqrt(2 * Math.PI);

function mean(values: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i];
  return sum / values.length;
}

function standardDeviation(values: ArrayLike<number>): number {
  const m = mean(values);
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += (values[i] - m) ** 2;
  return Math.sqrt(sum / values.length);
}

describe('initInducerTensors', () => {
  // D = 64, H = 4, d = 16; about 33,000 inducer values in total.
  const model = parseModelConfig({ model_type: 'gpt2', n_embd: 64, n_layer: 2, n_head: 4, vocab_size: 50, n_positions: 32 });
  const hp: InducerHyperParams = { keyRank: 8, valueRank: 48, loraQ: { rank: 16, alpha: 32, bias: true } };
  const tensors = initInducerTensors(model, hp, 'default', 123);

  function inducerValues(source: Map<string, { data: Float32Array }>): number[] {
    const values: number[] = [];
    for (const [name, tensor] of source) if (name.includes('.inducer.')) values.push(...tensor.data);
    return values;
  }

  it('creates every tensor with its shape', () => {
    const shapes = inducerTensorShapes(model, hp);
    assert.deepEqual([...tensors.keys()], [...shapes.keys()]);
    for (const [name, shape] of shapes) assert.deepEqual(tensors.get(name)?.shape, shape, name);
  });

  it('keeps inducer values inside (-0.02, 0.02)', () => {
    const values = inducerValues(tensors);
    assert.ok(values.length > 30_000);
    assert.ok(values.every((v) => v > -0.02 && v < 0.02));
  });

  it('matches the wrapped normal statistics', () => {
    const values = inducerValues(tensors);
    // Variance of fmod(z, 2) for z ~ N(0, 1): integrate (z - 2k sign z)^2 over each band of width 2.
    let variance = 0;
    let beyondHalf = 0; // P(|fmod(z, 2)| > 1)
    for (let k = 0; k < 5; k++) {
      variance += 2 * simpson((z) => (z - 2 * k) ** 2 * standardNormalDensity(z), 2 * k, 2 * k + 2, 2000);
      beyondHalf += 2 * simpson(standardNormalDensity, 2 * k + 1, 2 * k + 2, 2000);
    }
    const expectedStd = 0.01 * Math.sqrt(variance);
    assert.ok(Math.abs(expectedStd - 0.0087) < 0.0001, `integrated std ${expectedStd}`);

    const std = standardDeviation(values);
    assert.ok(Math.abs(std - expectedStd) / expectedStd < 0.03, `sample std ${std}, expected ${expectedStd}`);
    assert.ok(Math.abs(mean(values)) < (4 * expectedStd) / Math.sqrt(values.length), `mean ${mean(values)}`);
    const fractionBeyondHalf = values.filter((v) => Math.abs(v) > 0.01).length / values.length;
    assert.ok(Math.abs(fractionBeyondHalf - beyondHalf) < 0.01, `fraction |v| > 0.01 is ${fractionBeyondHalf}, expected ${beyondHalf}`);
  });

  it('draws lora_q.A from U(-1/sqrt(D), 1/sqrt(D))', () => {
    const bound = 1 / Math.sqrt(64);
    const values = [...(tensors.get('layers.0.lora_q.A')?.data ?? []), ...(tensors.get('layers.1.lora_q.A')?.data ?? [])];
    assert.equal(values.length, 2 * 16 * 64);
    assert.ok(values.every((v) => Math.abs(v) <= bound));
    assert.ok(Math.max(...values.map(Math.abs)) > 0.99 * bound);
    // A uniform distribution on [-b, b] has standard deviation b / sqrt(3).
    const std = standardDeviation(values);
    assert.ok(Math.abs(std - bound / Math.sqrt(3)) / (bound / Math.sqrt(3)) < 0.05, `std ${std}`);
  });

  it('sets lora_q.B and lora_q.bias to zero', () => {
    for (const layer of [0, 1]) {
      assert.ok(tensors.get(`layers.${layer}.lora_q.B`)?.data.every((v) => v === 0));
      assert.ok(tensors.get(`layers.${layer}.lora_q.bias`)?.data.every((v) => v === 0));
    }
  });

  it('zeroes only value.up for zero-value', () => {
    const zeroValue = initInducerTensors(model, hp, 'zero-value', 123);
    for (const [name, tensor] of zeroValue) {
      if (name.endsWith('.inducer.value.up.weight') || name.endsWith('.inducer.value.up.bias')) {
        assert.ok(tensor.data.every((v) => v === 0), name);
      } else {
        assert.deepEqual(tensor.data, tensors.get(name)?.data, name);
      }
    }
    assert.ok(zeroValue.get('layers.0.inducer.value.down.weight')?.data.some((v) => v !== 0));
  });

  it('is deterministic for a seed', () => {
    const again = initInducerTensors(model, hp, 'default', 123);
    for (const [name, tensor] of tensors) assert.deepEqual(again.get(name)?.data, tensor.data, name);
  });

  it('differs between seeds', () => {
    const other = initInducerTensors(model, hp, 'default', 124);
    const a = tensors.get('layers.0.inducer.value.up.weight')?.data ?? new Float32Array();
    const b = other.get('layers.0.inducer.value.up.weight')?.data ?? new Float32Array();
    let numEqual = 0;
    for (let i = 0; i < a.length; i++) if (a[i] === b[i]) numEqual++;
    assert.ok(numEqual < a.length / 100, `${numEqual} of ${a.length} values equal`);
  });

  it('rejects an unknown init', () => {
    // @ts-expect-error: the CLI passes unchecked strings, so the runtime check matters.
    assert.throws(() => initInducerTensors(model, hp, 'xavier', 1), /invalid init "xavier"/);
  });
});
