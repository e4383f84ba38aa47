/**
 * Gradient of Slice: the upstream gradient padded with zeros back to the input's extent along
 * each sliced axis. Starts, ends and axes must be constants and steps 1. The padding before is
 * the normalized start, and the padding after is whatever remains of the input dim, read with
 * Shape at run time, so symbolic dims work.
 */
import type { Value } from '../ir.js';
import { GradientError, requireInput, type GradientModule } from './rule.js';

export const sliceGradient: GradientModule = {
  opType: 'Slice',
  rule: (ctx) => {
    const { b, node } = ctx;
    const x = requireInput(ctx, 0);
    const rank = x.shape.length;
    const starts = ctx.constantInts(1);
    let axes = starts.map((_, i) => i);
    if (ctx.inputs[3]) axes = ctx.constantInts(3).map((a) => (a < 0 ? a + rank : a));
    if (ctx.inputs[4] && ctx.constantInts(4).some((step) => step !== 1)) {
      throw new GradientError(`Slice node ${node.name}: steps other than 1 are not supported by the gradient rule`);
    }
    const before: Value[] = [];
    const after: Value[] = [];
    axes.forEach((axis, i) => {
      const start = starts[i];
      const dim = x.shape[axis];
      let startValue: Value;
      if (start >= 0) startValue = b.constInt([typeof dim === 'number' ? Math.min(start, dim) : start]);
      else if (typeof dim === 'number') startValue = b.constInt([Math.max(0, start + dim)]);
      // NOTE: a negative start on a symbolic dim is not clamped at 0, so it must not exceed the bound size.
      else startValue = b.add(b.shapeOf(x, axis), b.constInt([start]));
      before.push(startValue);
      after.push(b.sub(b.sub(b.shapeOf(x, axis), startValue), b.shapeOf(ctx.grad, axis)));
    });
    const pads = b.concat([...before, ...after], 0); // [2 * numAxes]: all begins, then all ends
    const padded = b.emit('Pad', [ctx.grad, pads, null, b.constInt(axes)], [{ dtype: ctx.grad.dtype, shape: x.shape }], {
      mode: { kind: 'string', value: 'constant' },
    })[0];
    return [padded, null, null, null, null].slice(0, ctx.inputs.length);
  },
};
