/** Shared step of the reduction gradients: restore reduced axes of the upstream gradient, then expand it to the input's shape. */
import type { Value } from '../ir.js';
import { GradientError, intAttribute, requireInput, type GradientContext } from './rule.js';

/** Returns the upstream gradient (and forward output) with reduced axes restored as size 1, and the gradient expanded to the input's shape. */
export function reducedGradient(ctx: GradientContext): { keptGrad: Value; keptOutput: Value; expanded: Value } {
  const { b, node } = ctx;
  const x = requireInput(ctx, 0);
  const keepDims = intAttribute(ctx, 'keepdims', 1) === 1;
  if (!ctx.inputs[1]) {
    throw new GradientError(`${node.opType} node ${node.name}: reductions without an axes input (over all axes) are not supported; pass the axes`);
  }
  const rank = x.shape.length;
  const axes = ctx.constantInts(1).map((a) => (a < 0 ? a + rank : a));
  const restore = (v: Value): Value => (keepDims ? v : b.unsqueeze(v, axes));
  const keptGrad = restore(ctx.grad);
  const keptOutput = restore(ctx.outputs[0]);
  const expanded = b.emit('Expand', [keptGrad, b.shapeOf(x)], [{ dtype: 'float32', shape: x.shape }])[0];
  return { keptGrad, keptOutput, expanded };
}
