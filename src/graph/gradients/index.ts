/**
 * The gradient registry: a `Map` from ONNX op type to its {@link GradientRule}, filled from one
 * module per op.
 * @module
 */
import { addGradient } from './add.js';
import { castGradient } from './cast.js';
import { concatGradient } from './concat.js';
import { cosGradient } from './cos.js';
import { divGradient } from './div.js';
import { expGradient } from './exp.js';
import { gatherGradient } from './gather.js';
import { gemmGradient } from './gemm.js';
import { identityGradient } from './identity.js';
import { logGradient } from './log.js';
import { matMulGradient } from './mat-mul.js';
import { mulGradient } from './mul.js';
import { negGradient } from './neg.js';
import { powGradient } from './pow.js';
import { reduceMaxGradient } from './reduce-max.js';
import { reduceMeanGradient } from './reduce-mean.js';
import { reduceSumGradient } from './reduce-sum.js';
import { reshapeGradient } from './reshape.js';
import { GradientError, type GradientModule, type GradientRule } from './rule.js';
import { sigmoidGradient } from './sigmoid.js';
import { sinGradient } from './sin.js';
import { sliceGradient } from './slice.js';
import { softmaxGradient } from './softmax.js';
import { sqrtGradient } from './sqrt.js';
import { squeezeGradient } from './squeeze.js';
import { subGradient } from './sub.js';
import { tanhGradient } from './tanh.js';
import { transposeGradient } from './transpose.js';
import { unsqueezeGradient } from './unsqueeze.js';
import { whereGradient } from './where.js';

export { GradientError } from './rule.js';
export type { GradientContext, GradientModule, GradientRule } from './rule.js';

/** Gradient rules keyed by ONNX op type. */
export type GradientRegistry = Map<string, GradientRule>;

/** Every gradient module shipped with the project. */
export const ALL_GRADIENT_MODULES: readonly GradientModule[] = [
  addGradient,
  subGradient,
  mulGradient,
  divGradient,
  powGradient,
  negGradient,
  tanhGradient,
  sigmoidGradient,
  expGradient,
  logGradient,
  sqrtGradient,
  cosGradient,
  sinGradient,
  identityGradient,
  castGradient,
  whereGradient,
  matMulGradient,
  gemmGradient,
  reduceSumGradient,
  reduceMeanGradient,
  reduceMaxGradient,
  softmaxGradient,
  reshapeGradient,
  transposeGradient,
  unsqueezeGradient,
  squeezeGradient,
  concatGradient,
  sliceGradient,
  gatherGradient,
];

/** Adds `module` to `registry`. Throws a {@link GradientError} when its op type already has a rule. */
export function registerGradient(registry: GradientRegistry, module: GradientModule): void {
  if (registry.has(module.opType)) {
    throw new GradientError(`a gradient rule for op ${module.opType} is already registered; register each op type once`);
  }
  registry.set(module.opType, module.rule);
}

/** Creates a registry holding `modules` (every shipped rule by default). Throws on a duplicate op type. */
export function createGradientRegistry(modules: readonly GradientModule[] = ALL_GRADIENT_MODULES): GradientRegistry {
  const registry: GradientRegistry = new Map();
  for (const module of modules) registerGradient(registry, module);
  return registry;
}
