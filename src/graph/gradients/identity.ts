/** Gradient of Identity: the upstream gradient unchanged. */
import type { GradientModule } from './rule.js';

export const identityGradient: GradientModule = { opType: 'Identity', rule: ({ grad }) => [grad] };
