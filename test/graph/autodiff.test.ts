import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import ort from 'onnxruntime-node';
import { differentiate, GradientError } from '../../src/graph/autodiff.js';
import { GraphBuilder } from '../../src/graph/builder.js';
import { ALL_GRADIENT_MODULES, createGradientRegistry, registerGradient } from '../../src/graph/gradients/index.js';
import { tanhGradient } from '../../src/graph/gradients/tanh.js';
import { serializeModel } from '../../src/graph/onnx-writer.js';

describe('gradient registry', () => {
  it('rejects a duplicate op type', () => {
    const registry = createGradientRegistry([tanhGradient]);
    assert.throws(() => registerGradient(registry, tanhGradient), (error: unknown) => error instanceof GradientError && /op Tanh/.test(error.message));
  });

  it('holds each shipped op once', () => {
    const registry = createGradientRegistry();
    assert.equal(registry.size, ALL_GRADIENT_MODULES.length);
    for (const op of ['MatMul', 'Gemm', 'Gather', 'Where', 'Concat', 'Slice', 'ReduceMax', 'Softmax']) assert.ok(registry.has(op), `missing ${op}`);
  });
});

describe('differentiate errors', () => {
  it('names the op and node without a rule', () => {
    const b = new GraphBuilder('missing_rule');
    const x = b.input('x', 'float32', [3]);
    const [erf] = b.emit('Erf', [x], [{ dtype: 'float32', shape: [3] }]);
    const loss = b.reduceSum(erf, [0], false);
    assert.throws(
      () => differentiate(b, loss, [x]),
      (error: unknown) => error instanceof GradientError && /op Erf/.test(error.message) && /node Erf_node_\d+/.test(error.message),
    );
  });

  it('rejects a loss with several elements', () => {
    const b = new GraphBuilder('vector_loss');
    const x = b.input('x', 'float32', [3]);
    assert.throws(() => differentiate(b, b.tanh(x), [x]), GradientError);
  });

  it('rejects a computed Pow exponent on the path', () => {
    const b = new GraphBuilder('pow_exponent');
    const x = b.input('x', 'float32', []);
    const loss = b.pow(b.constFloat([2], []), x);
    assert.throws(() => differentiate(b, loss, [x]), (error: unknown) => error instanceof GradientError && /op Pow/.test(error.message));
  });

  it('ignores ops without rules off the path', () => {
    const b = new GraphBuilder('off_path');
    const x = b.input('x', 'float32', [3]);
    const frozen = b.initializer('frozen', 'float32', [3], Float32Array.from([1, 2, 3]));
    const [erf] = b.emit('Erf', [frozen], [{ dtype: 'float32', shape: [3] }]);
    const loss = b.reduceSum(b.mul(x, erf), [0], false);
    assert.doesNotThrow(() => differentiate(b, loss, [x]));
  });
});

describe('differentiate results', () => {
  it('sums gradients of a reused value and zeros a disconnected one', async () => {
    // loss = sum(x * x + 3 * x), so d loss / d x = 2x + 3; `unused` does not reach the loss.
    const b = new GraphBuilder('reuse');
    const x = b.input('x', 'float32', [3]);
    const unused = b.input('unused', 'float32', [2]);
    const loss = b.reduceSum(b.add(b.mul(x, x), b.mul(x, b.constFloat([3], []))), [0], false);
    const [dx, dUnused] = differentiate(b, loss, [x, unused]);
    b.output(dx, 'dx');
    b.output(dUnused, 'd_unused');
    b.output(b.tanh(unused), 'keep_unused');
    const session = await ort.InferenceSession.create(serializeModel(b.build()).model);
    const out = await session.run({
      x: new ort.Tensor('float32', Float32Array.from([0.5, -1, 2]), [3]),
      unused: new ort.Tensor('float32', Float32Array.from([1, 1]), [2]),
    });
    assert.deepEqual(Array.from(out.dx.data as Float32Array), [4, 1, 7]);
    assert.deepEqual(Array.from(out.d_unused.data as Float32Array), [0, 0]);
  });
});

describe('ReduceMax gradient with ties', () => {
  it('splits the gradient evenly', async () => {
    // loss = max(x) with x = [1, 1, 0]: the two tied maxima get 1/2 each, the rest 0.
    const b = new GraphBuilder('max_ties');
    const x = b.input('x', 'float32', [3]);
    const [dx] = differentiate(b, b.reduceMax(x, [0], false), [x]);
    b.output(dx, 'dx');
    const session = await ort.InferenceSession.create(serializeModel(b.build()).model);
    const out = await session.run({ x: new ort.Tensor('float32', Float32Array.from([1, 1, 0]), [3]) });
    assert.deepEqual(Array.from(out.dx.data as Float32Array), [0.5, 0.5, 0]);
  });
});

// ---- two-layer MLP against a float64 reference -------------------------------------------

const BATCH = 4;
const IN = 3;
const HIDDEN = 5;
const CLASSES = 4;
const LABELS = [2, 0, 3, 1];

type Params = { w1: number[]; b1: number[]; w2: number[]; b2: number[] };

/** Mean softmax cross-entropy of tanh(x W1 + b1) W2 + b2, in float64, written independently of the graph. */
function referenceLoss(x: number[], p: Params): number {
  let total = 0;
  for (let n = 0; n < BATCH; n++) {
    const hidden = Array.from({ length: HIDDEN }, (_, j) => {
      let s = p.b1[j];
      for (let i = 0; i < IN; i++) s += x[n * IN + i] * p.w1[i * HIDDEN + j];
      return Math.tanh(s);
    });
    const logits = Array.from({ length: CLASSES }, (_, k) => {
      let s = p.b2[k];
      for (let j = 0; j < HIDDEN; j++) s += hidden[j] * p.w2[j * CLASSES + k];
      return s;
    });
    const max = Math.max(...logits);
    const logSumExp = max + Math.log(logits.reduce((s, l) => s + Math.exp(l - max), 0));
    total += logSumExp - logits[LABELS[n]];
  }
  return total / BATCH;
}

describe('differentiate on a two-layer MLP', () => {
  it('matches float64 finite differences', async () => {
    const b = new GraphBuilder('mlp');
    const x = b.input('x', 'float32', [BATCH, IN]);
    const w1 = b.input('w1', 'float32', [IN, HIDDEN]);
    const b1 = b.input('b1', 'float32', [HIDDEN]);
    const w2 = b.input('w2', 'float32', [HIDDEN, CLASSES]);
    const b2 = b.input('b2', 'float32', [CLASSES]);
    const oneHot = b.constFloat(LABELS.flatMap((label) => Array.from({ length: CLASSES }, (_, k) => (k === label ? 1 : 0))), [BATCH, CLASSES]);
    const hidden = b.tanh(b.add(b.matMul(x, w1), b1)); // [B, H]
    const logits = b.gemm(hidden, b.transpose(w2, [1, 0]), { transB: true, c: b2 }); // [B, C]
    const logProbs = b.log(b.softmax(logits, -1)); // [B, C]
    const loss = b.neg(b.reduceMean(b.reduceSum(b.mul(oneHot, logProbs), [-1], false), [0], false)); // []
    const grads = differentiate(b, loss, [w1, b1, w2, b2]);
    b.output(loss, 'loss');
    const names = ['w1', 'b1', 'w2', 'b2'] as const;
    grads.forEach((g, i) => b.output(g, `grad_${names[i]}`));
    const session = await ort.InferenceSession.create(serializeModel(b.build()).model);

    let state = 7;
    const next = (): number => {
      state = (state * 1103515245 + 12345) % 2147483648;
      return state / 2147483648 - 0.5;
    };
    const xData = Array.from({ length: BATCH * IN }, next);
    const params: Params = {
      w1: Array.from({ length: IN * HIDDEN }, next),
      b1: Array.from({ length: HIDDEN }, next),
      w2: Array.from({ length: HIDDEN * CLASSES }, next),
      b2: Array.from({ length: CLASSES }, next),
    };
    const shapes = { w1: [IN, HIDDEN], b1: [HIDDEN], w2: [HIDDEN, CLASSES], b2: [CLASSES] };
    const feeds: Record<string, ort.Tensor> = { x: new ort.Tensor('float32', Float32Array.from(xData), [BATCH, IN]) };
    for (const name of names) feeds[name] = new ort.Tensor('float32', Float32Array.from(params[name]), shapes[name]);
    const out = await session.run(feeds);

    // Feed the reference the float32-rounded inputs so both see the same point.
    const rounded = (v: number[]): number[] => Array.from(Float32Array.from(v));
    const x64 = rounded(xData);
    const p64: Params = { w1: rounded(params.w1), b1: rounded(params.b1), w2: rounded(params.w2), b2: rounded(params.b2) };
    assert.ok(Math.abs((out.loss.data as Float32Array)[0] - referenceLoss(x64, p64)) < 1e-5, 'loss differs from the float64 reference');

    // In float64, h = 1e-5 gives a central-difference error near 1e-10; the 1e-4 tolerance covers
    // the float32 rounding of the generated gradients.
    const step = 1e-5;
    for (const name of names) {
      const generated = out[`grad_${name}`].data as Float32Array;
      for (let e = 0; e < p64[name].length; e++) {
        const plus = { ...p64, [name]: p64[name].map((v, i) => (i === e ? v + step : v)) };
        const minus = { ...p64, [name]: p64[name].map((v, i) => (i === e ? v - step : v)) };
        const numeric = (referenceLoss(x64, plus) - referenceLoss(x64, minus)) / (2 * step);
        assert.ok(Math.abs(generated[e] - numeric) < 1e-4, `d loss / d ${name}[${e}]: generated ${generated[e]}, finite difference ${numeric}`);
      }
    }
  });
});
