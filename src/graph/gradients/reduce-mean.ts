/** Gradient of ReduceMean: the upstream gradient broadcast back over the reduced axes, divided by the count of reduced elements. */
import { reducedGradient } from './reduce-common.js';
import { requireInput, scalar, type GradientModule } from './rule.js';

export const reduceMeanGradient: GradientModule = {
  opType: 'ReduceMean',
  rule: (ctx) => {
    const { b } = ctx;
    const x = requireInput(ctx, 0);
    const y = ctx.outputs[0];
    const { expanded } = reducedGradient(ctx);
    const sizes = [x, y].map((v) => v.shape.reduce<number | null>((n, d) => (n !== null && typeof d === 'number' ? n * d : null), 1));
    if (sizes[0] !== null && sizes[1] !== null) return [b.mul(expanded, scalar(b, sizes[1] / sizes[0])), null];
    // A symbolic dim: take the ratio of output to input element counts at run time.
    const count = (v: typeof x) => b.cast(b.emit('Size', [v], [{ dtype: 'int64', shape: [] }])[0], 'float32');
    return [b.div(b.mul(expanded, count(y)), count(x)), null];
  },
};
