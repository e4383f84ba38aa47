/**
 * Gradient of Concat: the upstream gradient split along the concat axis into the input sizes.
 * The sizes are read with Shape at run time, so symbolic dims need no special case.
 */
import { GradientError, intAttribute, type GradientModule } from './rule.js';

export const concatGradient: GradientModule = {
  opType: 'Concat',
  rule: (ctx) => {
    const { b, grad, node } = ctx;
    const inputs = ctx.inputs.map((v, i) => {
      if (!v) throw new GradientError(`Concat node ${node.name}: input ${i} is omitted`);
      return v;
    });
    const rank = grad.shape.length;
    const rawAxis = intAttribute(ctx, 'axis', 0);
    const axis = rawAxis < 0 ? rawAxis + rank : rawAxis;
    if (inputs.length === 1) return [grad];
    const sizes = b.concat(inputs.map((v) => b.shapeOf(v, axis)), 0); // [numInputs]
    const parts = b.emit(
      'Split',
      [grad, sizes],
      inputs.map((v) => ({ dtype: grad.dtype, shape: v.shape })),
      { axis: { kind: 'int', value: axis } },
    );
    return parts;
  },
};
