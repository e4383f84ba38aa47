/** Gradient of Log: `g / x`. */
import { requireInput, type GradientModule } from './rule.js';

export const logGradient: GradientModule = { opType: 'Log', rule: (ctx) => [ctx.b.div(ctx.grad, requireInput(ctx, 0))] };
