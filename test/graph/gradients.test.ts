import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import ort from 'onnxruntime-node';
import { differentiate } from '../../src/graph/autodiff.js';
import { GraphBuilder } from '../../src/graph/builder.js';
import type { Dim, Value } from '../../src/graph/ir.js';
import { serializeModel } from '../../src/graph/onnx-writer.js';

// Finite-difference settings for float32. The graph evaluates f in float32, so f carries a
// rounding error of about 1e-6 (f sums tens of terms of size ~1). With h = 1e-2 the central
// difference then has a rounding error of about 1e-6 / 2h = 5e-5 and a truncation error of
// about h^2 / 6 * |f'''| <= 1e-4 for the smooth ops tested with inputs of size ~1. The
// tolerance |analytic - numeric| <= ABS_TOL + REL_TOL * |numeric| leaves a 10x margin over that.
const STEP = 1e-2;
const ABS_TOL = 2e-3;
const REL_TOL = 2e-2;

/** A deterministic generator (mulberry32), so failures reproduce. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface InputSpec {
  name: string;
  /** Declared shape, which may contain symbols. */
  shape: readonly Dim[];
  /** Concrete shape fed at run time. */
  runShape?: readonly number[];
  dtype?: 'float32' | 'int64' | 'bool';
  /** Fixed data; random uniform in [low, high) when absent. */
  data?: readonly number[];
  low?: number;
  high?: number;
  /** Whether to check the gradient with respect to this input (float32 only); default true. */
  differentiable?: boolean;
}

function feedTensor(spec: InputSpec, data: readonly number[]): ort.Tensor {
  const dims = (spec.runShape ?? spec.shape) as number[];
  if (spec.dtype === 'int64') return new ort.Tensor('int64', BigInt64Array.from(data.map((x) => BigInt(x))), dims);
  if (spec.dtype === 'bool') return new ort.Tensor('bool', Uint8Array.from(data), dims);
  return new ort.Tensor('float32', Float32Array.from(data), dims);
}

/**
 * Builds f(inputs) = sum(op(inputs) * r) with random weights r, differentiates it, and compares
 * each generated gradient element with the central difference (f(x + h e_i) - f(x - h e_i)) / 2h,
 * both evaluated by onnxruntime.
 */
async function checkGradient(seed: number, specs: readonly InputSpec[], op: (b: GraphBuilder, inputs: Value[]) => Value, outputRunShape?: readonly number[]): Promise<void> {
  const next = random(seed);
  const b = new GraphBuilder('gradient_check');
  const inputs = specs.map((s) => b.input(s.name, s.dtype ?? 'float32', s.shape));
  const y = op(b, inputs);
  const weights = b.input('weights', 'float32', y.shape);
  const product = b.mul(y, weights);
  const f = b.reduceSum(product, product.shape.map((_, i) => i), false);
  const checked = specs.map((s, i) => ({ spec: s, value: inputs[i] })).filter(({ spec }) => (spec.dtype ?? 'float32') === 'float32' && spec.differentiable !== false);
  const grads = differentiate(b, f, checked.map((c) => c.value));
  b.output(f, 'f');
  grads.forEach((g, i) => b.output(g, `grad_${checked[i].spec.name}`));
  const session = await ort.InferenceSession.create(serializeModel(b.build()).model);

  const data = specs.map((s) => {
    if (s.data) return [...s.data];
    const count = ((s.runShape ?? s.shape) as number[]).reduce((p, d) => p * d, 1);
    const low = s.low ?? -1;
    const high = s.high ?? 1;
    return Array.from({ length: count }, () => low + (high - low) * next());
  });
  const weightShape = (outputRunShape ?? y.shape) as number[];
  const weightData = Array.from({ length: weightShape.reduce((p, d) => p * d, 1) }, () => next() * 2 - 1);
  const feeds = (values: number[][]): Record<string, ort.Tensor> => {
    const out: Record<string, ort.Tensor> = { weights: new ort.Tensor('float32', Float32Array.from(weightData), weightShape) };
    specs.forEach((s, i) => (out[s.name] = feedTensor(s, values[i])));
    return out;
  };

  const base = await session.run(feeds(data));
  const evaluate = async (values: number[][]): Promise<number> => ((await session.run(feeds(values))).f.data as Float32Array)[0];

  for (const { spec } of checked) {
    const index = specs.indexOf(spec);
    const analytic = base[`grad_${spec.name}`].data as Float32Array;
    assert.equal(analytic.length, data[index].length, `gradient of ${spec.name} has ${analytic.length} elements, expected ${data[index].length}`);
    for (let e = 0; e < data[index].length; e++) {
      const plus = data.map((d) => [...d]);
      const minus = data.map((d) => [...d]);
      plus[index][e] += STEP;
      minus[index][e] -= STEP;
      const numeric = ((await evaluate(plus)) - (await evaluate(minus))) / (2 * STEP);
      const error = Math.abs(analytic[e] - numeric);
      assert.ok(error <= ABS_TOL + REL_TOL * Math.abs(numeric), `d f / d ${spec.name}[${e}]: generated ${analytic[e]}, finite difference ${numeric}`);
    }
  }
}

describe('elementwise gradient rules', () => {
  it('Add with broadcasting', () => checkGradient(1, [{ name: 'a', shape: [2, 3] }, { name: 'c', shape: [3] }], (b, [a, c]) => b.add(a, c)));
  it('Add with broadcasting on both sides', () => checkGradient(2, [{ name: 'a', shape: [2, 1] }, { name: 'c', shape: [1, 3] }], (b, [a, c]) => b.add(a, c)));
  it('Add with a symbolic dim', () =>
    checkGradient(3, [{ name: 'a', shape: ['n', 3], runShape: [2, 3] }, { name: 'c', shape: [1, 3] }], (b, [a, c]) => b.add(a, c), [2, 3]));
  it('Sub with broadcasting', () => checkGradient(4, [{ name: 'a', shape: [3] }, { name: 'c', shape: [2, 3] }], (b, [a, c]) => b.sub(a, c)));
  it('Mul with broadcasting', () => checkGradient(5, [{ name: 'a', shape: [2, 3] }, { name: 'c', shape: [2, 1] }], (b, [a, c]) => b.mul(a, c)));
  it('Mul of a value by itself', () => checkGradient(6, [{ name: 'a', shape: [2, 3] }], (b, [a]) => b.mul(a, a)));
  it('Div with broadcasting', () =>
    checkGradient(7, [{ name: 'a', shape: [2, 3] }, { name: 'c', shape: [3], low: 0.5, high: 2 }], (b, [a, c]) => b.div(a, c)));
  it('Pow with constant exponent 2', () => checkGradient(8, [{ name: 'a', shape: [2, 3] }], (b, [a]) => b.pow(a, b.constFloat([2], []))));
  it('Pow with constant exponent 3', () => checkGradient(9, [{ name: 'a', shape: [2, 3] }], (b, [a]) => b.pow(a, b.constFloat([3], []))));
  it('Neg', () => checkGradient(10, [{ name: 'a', shape: [2, 3] }], (b, [a]) => b.neg(a)));
  it('Tanh', () => checkGradient(11, [{ name: 'a', shape: [2, 3] }], (b, [a]) => b.tanh(a)));
  it('Sigmoid', () => checkGradient(12, [{ name: 'a', shape: [2, 3] }], (b, [a]) => b.sigmoid(a)));
  it('Exp', () => checkGradient(13, [{ name: 'a', shape: [2, 3] }], (b, [a]) => b.exp(a)));
  it('Log', () => checkGradient(14, [{ name: 'a', shape: [2, 3], low: 0.5, high: 2 }], (b, [a]) => b.log(a)));
  it('Sqrt', () => checkGradient(15, [{ name: 'a', shape: [2, 3], low: 0.5, high: 2 }], (b, [a]) => b.sqrt(a)));
  it('Cos', () => checkGradient(16, [{ name: 'a', shape: [2, 3] }], (b, [a]) => b.cos(a)));
  it('Sin', () => checkGradient(17, [{ name: 'a', shape: [2, 3] }], (b, [a]) => b.sin(a)));
  it('Identity', () => checkGradient(18, [{ name: 'a', shape: [2, 3] }], (b, [a]) => b.emit('Identity', [a], [{ dtype: 'float32', shape: [2, 3] }])[0]));
  it('Cast float32 to float32', () => checkGradient(19, [{ name: 'a', shape: [2, 3] }], (b, [a]) => b.cast(a, 'float32')));
  it('Where with broadcast branches', () =>
    checkGradient(
      20,
      [
        { name: 'mask', shape: [2, 3], dtype: 'bool', data: [1, 0, 1, 0, 0, 1] },
        { name: 'a', shape: [2, 3] },
        { name: 'c', shape: [3] },
      ],
      (b, [mask, a, c]) => b.where(mask, a, c),
    ));
});

describe('linear algebra gradient rules', () => {
  it('MatMul 2-D', () => checkGradient(21, [{ name: 'a', shape: [2, 3] }, { name: 'c', shape: [3, 4] }], (b, [a, c]) => b.matMul(a, c)));
  it('MatMul batched against a 2-D right side', () =>
    checkGradient(22, [{ name: 'a', shape: [2, 3, 4] }, { name: 'c', shape: [4, 2] }], (b, [a, c]) => b.matMul(a, c)));
  it('MatMul with broadcast batch dims', () =>
    checkGradient(23, [{ name: 'a', shape: [2, 1, 2, 3] }, { name: 'c', shape: [2, 3, 2] }], (b, [a, c]) => b.matMul(a, c)));
  it('Gemm plain with bias', () =>
    checkGradient(24, [{ name: 'a', shape: [2, 3] }, { name: 'w', shape: [3, 4] }, { name: 'c', shape: [4] }], (b, [a, w, c]) => b.gemm(a, w, { c })));
  it('Gemm with transB', () => checkGradient(25, [{ name: 'a', shape: [2, 3] }, { name: 'w', shape: [4, 3] }], (b, [a, w]) => b.gemm(a, w, { transB: true })));
  it('Gemm with transA', () => checkGradient(26, [{ name: 'a', shape: [3, 2] }, { name: 'w', shape: [3, 4] }], (b, [a, w]) => b.gemm(a, w, { transA: true })));
  it('Gemm with transA and transB', () =>
    checkGradient(27, [{ name: 'a', shape: [3, 2] }, { name: 'w', shape: [4, 3] }], (b, [a, w]) => b.gemm(a, w, { transA: true, transB: true })));
});

describe('reduction gradient rules', () => {
  it('ReduceSum keeping dims', () => checkGradient(31, [{ name: 'a', shape: [2, 3, 2] }], (b, [a]) => b.reduceSum(a, [1], true)));
  it('ReduceSum dropping dims', () => checkGradient(32, [{ name: 'a', shape: [2, 3, 2] }], (b, [a]) => b.reduceSum(a, [0, -1], false)));
  it('ReduceMean keeping dims', () => checkGradient(33, [{ name: 'a', shape: [2, 3, 2] }], (b, [a]) => b.reduceMean(a, [-1], true)));
  it('ReduceMean over a symbolic dim', () =>
    checkGradient(34, [{ name: 'a', shape: ['n', 3], runShape: [4, 3] }], (b, [a]) => b.reduceMean(a, [0], false), [3]));
  it('ReduceMax with distinct values', () =>
    // In each row the maximum exceeds the other values by at least 0.2, far more than h, so no difference step crosses the kink.
    checkGradient(35, [{ name: 'a', shape: [2, 3], data: [0.3, -0.2, 0.5, 0.1, 0.4, -0.5] }], (b, [a]) => b.reduceMax(a, [1], false)));
  it('Softmax on the last axis', () => checkGradient(36, [{ name: 'a', shape: [2, 4] }], (b, [a]) => b.softmax(a, -1)));
  it('Softmax on axis 0', () => checkGradient(37, [{ name: 'a', shape: [3, 2] }], (b, [a]) => b.softmax(a, 0)));
});

describe('shape gradient rules', () => {
  it('Reshape', () => checkGradient(41, [{ name: 'a', shape: [2, 3] }], (b, [a]) => b.reshape(a, [3, 2])));
  it('Reshape with a symbolic dim', () =>
    checkGradient(42, [{ name: 'a', shape: ['n', 2, 2], runShape: [3, 2, 2] }], (b, [a]) => b.reshape(a, [0, 4]), [3, 4]));
  it('Transpose', () => checkGradient(43, [{ name: 'a', shape: [2, 3, 4] }], (b, [a]) => b.transpose(a, [2, 0, 1])));
  it('Concat', () =>
    checkGradient(44, [{ name: 'a', shape: [2, 1] }, { name: 'c', shape: [2, 3] }], (b, [a, c]) => b.concat([a, c, a], 1)));
  it('Slice with positive bounds', () => checkGradient(45, [{ name: 'a', shape: [2, 5] }], (b, [a]) => b.slice(a, 1, 1, 4)));
  it('Slice with a negative start', () => checkGradient(46, [{ name: 'a', shape: [4, 2] }], (b, [a]) => b.slice(a, 0, -3, 4)));
  it('Slice of a symbolic dim', () =>
    checkGradient(47, [{ name: 'a', shape: [2, 'n'], runShape: [2, 5] }], (b, [a]) => b.slice(a, 1, 1, 3), [2, 2]));
  it('Unsqueeze', () => checkGradient(48, [{ name: 'a', shape: [2, 3] }], (b, [a]) => b.unsqueeze(a, [0, 2])));
  it('Squeeze', () => checkGradient(49, [{ name: 'a', shape: [2, 1, 3] }], (b, [a]) => b.squeeze(a, [1])));
  it('Gather on axis 0 with repeated indices', () =>
    checkGradient(
      50,
      [
        { name: 'table', shape: [4, 3] },
        { name: 'ids', shape: [2, 2], dtype: 'int64', data: [1, 3, 1, 0] },
      ],
      (b, [table, ids]) => b.gather(table, ids, 0),
    ));
  it('Gather on axis 1', () =>
    checkGradient(
      51,
      [
        { name: 'stack', shape: [2, 3, 2] },
        { name: 'ids', shape: [2], dtype: 'int64', data: [2, 2] },
      ],
      (b, [stack, ids]) => b.gather(stack, ids, 1),
    ));
  it('Gather with a scalar index', () =>
    checkGradient(
      52,
      [
        { name: 'stack', shape: [3, 2] },
        { name: 'ids', shape: [], dtype: 'int64', data: [1] },
      ],
      (b, [stack, ids]) => b.gather(stack, ids, 0),
    ));
});
