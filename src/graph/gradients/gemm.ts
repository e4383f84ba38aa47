/**
 * Gradient of Gemm (`y = alpha * op(a) x op(b) + beta * c`, where op transposes when `transA` or
 * `transB` is set). Each of the four transpose cases is written out; `c` gets `beta * g` summed
 * over its broadcast axes.
 */
import { floatAttribute, intAttribute, reduceToShape, requireInput, scalar, type GradientModule } from './rule.js';

export const gemmGradient: GradientModule = {
  opType: 'Gemm',
  rule: (ctx) => {
    const { b } = ctx;
    const a = requireInput(ctx, 0);
    const w = requireInput(ctx, 1);
    const bias = ctx.inputs[2] ?? null;
    const transA = intAttribute(ctx, 'transA', 0) === 1;
    const transB = intAttribute(ctx, 'transB', 0) === 1;
    const alpha = floatAttribute(ctx, 'alpha', 1);
    const beta = floatAttribute(ctx, 'beta', 1);
    const grad = alpha === 1 ? ctx.grad : b.mul(ctx.grad, scalar(b, alpha)); // [n, m]

    let gradA;
    let gradW;
    if (!transA && !transB) {
      gradA = b.gemm(grad, w, { transB: true }); // g x b^T
      gradW = b.gemm(a, grad, { transA: true }); // a^T x g
    } else if (!transA && transB) {
      gradA = b.gemm(grad, w); // g x b
      gradW = b.gemm(grad, a, { transA: true }); // g^T x a
    } else if (transA && !transB) {
      gradA = b.gemm(w, grad, { transB: true }); // b x g^T
      gradW = b.gemm(a, grad); // a x g
    } else {
      gradA = b.gemm(w, grad, { transA: true, transB: true }); // b^T x g^T
      gradW = b.gemm(grad, a, { transA: true, transB: true }); // g^T x a^T
    }

    const gradients = [gradA, gradW];
    if (bias) gradients.push(reduceToShape(b, beta === 1 ? ctx.grad : b.mul(ctx.grad, scalar(b, beta)), bias));
    return gradients;
  },
};
