import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { floatTensor, type HostTensor } from '../../src/model/tensor.js';
import { AdamW, clipGradientNorm, OptimizerError } from '../../src/train/optimizer.js';

const settings = { beta1: 0.9, beta2: 0.999, epsilon: 1e-6, weightDecay: 0 };

function params(values: number[]): Map<string, HostTensor> {
  return new Map([['w', floatTensor([values.length], Float32Array.from(values))]]);
}

/**
 * Float64 AdamW in the form of Hugging Face's `transformers.AdamW` (correct_bias=True), written
 * out step by step, independent of the implementation under test.
 */
function referenceAdamW(p0: number[], grads: number[][], lrs: number[], weightDecay: number): number[] {
  const p = [...p0];
  const m = p.map(() => 0);
  const v = p.map(() => 0);
  grads.forEach((g, k) => {
    const t = k + 1;
    for (let i = 0; i < p.length; i++) {
      m[i] = 0.9 * m[i] + 0.1 * g[i];
      v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
      const stepSize = (lrs[k] * Math.sqrt(1 - 0.999 ** t)) / (1 - 0.9 ** t);
      p[i] -= (stepSize * m[i]) / (Math.sqrt(v[i]) + 1e-6);
      p[i] -= lrs[k] * weightDecay * p[i];
    }
  });
  return p;
}

describe('AdamW', () => {
  it('moves each value by about lr on the first step', () => {
    // At t = 1, m = 0.1 g and √v = √0.001 |g|, so the step is lr · g / (|g| + ε / √0.001):
    // Hugging Face's AdamW adds ε before the bias correction, which scales it by 1/√(1−β2).
    const p = params([1, -2, 0.5]);
    const optimizer = new AdamW(new Map([['w', [3]]]), settings);
    optimizer.step(p, new Map([['w', Float32Array.from([0.3, -4, 1e-3])]]), 0.01);
    const epsilonAtStep1 = 1e-6 / Math.sqrt(0.001);
    assert.ok(Math.abs(p.get('w')!.data[0] - (1 - 0.01 * (0.3 / (0.3 + epsilonAtStep1)))) < 1e-7);
    assert.ok(Math.abs(p.get('w')!.data[1] - (-2 + 0.01 * (4 / (4 + epsilonAtStep1)))) < 1e-7);
    assert.ok(Math.abs(p.get('w')!.data[2] - (0.5 - 0.01 * (1e-3 / (1e-3 + epsilonAtStep1)))) < 1e-7);
    assert.equal(optimizer.updateCount, 1);
  });

  it('matches a float64 reference over several steps with weight decay', () => {
    const start = [0.2, -0.7, 1.5, 0];
    const grads = [
      [0.1, -0.2, 0.3, 0],
      [0.05, 0.4, -0.1, 1e-4],
      [-0.3, 0.1, 0.2, -2],
      [0.2, 0.2, 0.2, 0.2],
    ];
    const lrs = [0.001, 0.01, 0.005, 0.02];
    const p = params(start);
    const optimizer = new AdamW(new Map([['w', [4]]]), { ...settings, weightDecay: 0.1 });
    grads.forEach((g, k) => optimizer.step(p, new Map([['w', Float32Array.from(g)]]), lrs[k]));
    const expected = referenceAdamW(start, grads, lrs, 0.1);
    for (let i = 0; i < 4; i++) assert.ok(Math.abs(p.get('w')!.data[i] - expected[i]) < 1e-6, `value ${i}`);
  });

  it('finds the minimum of a quadratic', () => {
    // f(w) = ½ Σ (w_i − c_i)², gradient w − c.
    const target = [0.3, -1.2, 2];
    const p = params([0, 0, 0]);
    const optimizer = new AdamW(new Map([['w', [3]]]), settings);
    for (let step = 0; step < 2000; step++) {
      const w = p.get('w')!.data;
      optimizer.step(p, new Map([['w', Float32Array.from(target.map((c, i) => w[i] - c))]]), 0.01 * (1 - step / 2000));
    }
    for (let i = 0; i < 3; i++) assert.ok(Math.abs(p.get('w')!.data[i] - target[i]) < 1e-2, `w[${i}] = ${p.get('w')!.data[i]}`);
  });

  it('continues identically after exporting and importing its state', () => {
    const shapes = new Map([['w', [2]]]);
    const a = new AdamW(shapes, settings);
    const pa = params([1, 2]);
    a.step(pa, new Map([['w', Float32Array.from([0.5, -0.5])]]), 0.1);
    const b = new AdamW(shapes, settings);
    b.importState(a.exportState());
    const pb = params([...pa.get('w')!.data]);
    a.step(pa, new Map([['w', Float32Array.from([0.2, 0.1])]]), 0.1);
    b.step(pb, new Map([['w', Float32Array.from([0.2, 0.1])]]), 0.1);
    assert.deepEqual([...pb.get('w')!.data], [...pa.get('w')!.data]);
    assert.equal(b.updateCount, 2);
  });

  it('rejects a non-finite gradient without updating', () => {
    const p = params([1, 2]);
    const optimizer = new AdamW(new Map([['w', [2]]]), settings);
    assert.throws(() => optimizer.step(p, new Map([['w', Float32Array.from([0.1, Number.NaN])]]), 0.1), /NaN at flat index 1/);
    assert.deepEqual([...p.get('w')!.data], [1, 2]);
    assert.equal(optimizer.updateCount, 0);
  });

  it('rejects a missing gradient and invalid settings', () => {
    const optimizer = new AdamW(new Map([['w', [2]]]), settings);
    assert.throws(() => optimizer.step(params([1, 2]), new Map(), 0.1), OptimizerError);
    assert.throws(() => new AdamW(new Map(), { ...settings, beta1: 1 }), /beta1/);
    assert.throws(() => new AdamW(new Map(), { ...settings, epsilon: 0 }), /epsilon/);
  });
});

describe('clipGradientNorm', () => {
  it('scales a large gradient to the maximum norm', () => {
    const gradients = new Map([
      ['a', Float32Array.from([3])],
      ['b', Float32Array.from([0, 4])],
    ]);
    const norm = clipGradientNorm(gradients, 1);
    assert.equal(norm, 5);
    assert.ok(Math.abs(gradients.get('a')![0] - 0.6) < 1e-6);
    assert.ok(Math.abs(gradients.get('b')![1] - 0.8) < 1e-6);
  });

  it('leaves a small gradient unchanged', () => {
    const gradients = new Map([['a', Float32Array.from([0.3, 0.4])]]);
    assert.ok(Math.abs(clipGradientNorm(gradients, 1) - 0.5) < 1e-7);
    assert.deepEqual([...gradients.get('a')!], [Math.fround(0.3), Math.fround(0.4)]);
  });
});
