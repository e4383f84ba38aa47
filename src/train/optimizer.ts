/**
 * AdamW (Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019) on float32
 * host tensors, and global gradient-norm clipping. The update is the one of the Hugging Face
 * `transformers.AdamW` with `correct_bias=True`, which the official inducer-tuning code trains
 * with: ε is added to the uncorrected √v, the bias corrections scale the step, and the decoupled
 * decay is applied after the Adam step. (PyTorch's `torch.optim.AdamW` adds ε to the corrected
 * √v̂ instead, which makes early steps with small gradients larger.)
 * @module
 */
import { floatTensor, formatShape, type HostTensor } from '../model/tensor.js';

/** Hyper-parameters of {@link AdamW}. */
export interface AdamWSettings {
  /** Decay rate of the first-moment average (default 0.9). */
  readonly beta1: number;
  /** Decay rate of the second-moment average (default 0.999). */
  readonly beta2: number;
  /** Added to √v in the denominator (the inducer-tuning code uses 1e-6). */
  readonly epsilon: number;
  /** Decoupled weight decay λ: each step multiplies a parameter by 1 − lr·λ (0 for none). */
  readonly weightDecay: number;
}

/** AdamW defaults of the official inducer-tuning code for GPT-2: β = (0.9, 0.999), ε = 1e-6, no decay. */
export const DEFAULT_ADAMW: AdamWSettings = { beta1: 0.9, beta2: 0.999, epsilon: 1e-6, weightDecay: 0 };

/** Error for invalid optimizer settings, mismatched gradients or non-finite values. */
export class OptimizerError extends Error {
  override readonly name = 'OptimizerError';
}

/** Optimizer state that a checkpoint stores: the step count and both moment estimates by parameter name. */
export interface AdamWState {
  /** Number of updates applied so far. */
  readonly stepCount: number;
  readonly firstMoments: ReadonlyMap<string, HostTensor>;
  readonly secondMoments: ReadonlyMap<string, HostTensor>;
}

function checkSettings(settings: AdamWSettings): void {
  const inUnitInterval = (value: number): boolean => Number.isFinite(value) && value >= 0 && value < 1;
  if (!inUnitInterval(settings.beta1)) throw new OptimizerError(`invalid AdamW beta1 ${settings.beta1}: expected a number in [0, 1)`);
  if (!inUnitInterval(settings.beta2)) throw new OptimizerError(`invalid AdamW beta2 ${settings.beta2}: expected a number in [0, 1)`);
  if (!Number.isFinite(settings.epsilon) || settings.epsilon <= 0) {
    throw new OptimizerError(`invalid AdamW epsilon ${settings.epsilon}: expected a finite number > 0`);
  }
  if (!Number.isFinite(settings.weightDecay) || settings.weightDecay < 0) {
    throw new OptimizerError(`invalid weight decay ${settings.weightDecay}: expected a finite number >= 0`);
  }
}

/** AdamW over a fixed set of named float32 parameters, updated in place. */
export class AdamW {
  private readonly settings: AdamWSettings;
  private readonly firstMoments = new Map<string, Float32Array>();
  private readonly secondMoments = new Map<string, Float32Array>();
  private readonly shapes = new Map<string, readonly number[]>();
  private stepCount = 0;

  /** Creates an optimizer with zero moments for parameters of these names and shapes. */
  constructor(shapes: ReadonlyMap<string, readonly number[]>, settings: AdamWSettings = DEFAULT_ADAMW) {
    checkSettings(settings);
    this.settings = settings;
    for (const [name, shape] of shapes) {
      const size = shape.reduce((product, dim) => product * dim, 1);
      this.shapes.set(name, [...shape]);
      this.firstMoments.set(name, new Float32Array(size));
      this.secondMoments.set(name, new Float32Array(size));
    }
  }

  /** Number of updates applied so far (t in the bias corrections). */
  get updateCount(): number {
    return this.stepCount;
  }

  /**
   * Applies one update with learning rate `learningRate` to every parameter in `params` (changed
   * in place) from `gradients`. Per element, with t the new step count:
   * m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
   * p ← p − lr · (√(1−β2^t) / (1−β1^t)) · m / (√v + ε); then p ← p − lr·λ·p.
   * Throws {@link OptimizerError} when a parameter or gradient is missing, has the wrong size, or
   * a gradient value is not finite; nothing is updated then.
   */
  step(params: ReadonlyMap<string, HostTensor>, gradients: ReadonlyMap<string, Float32Array>, learningRate: number): void {
    this.checkGradients(params, gradients);
    const { beta1, beta2, epsilon, weightDecay } = this.settings;
    const t = this.stepCount + 1;
    const stepSize = (learningRate * Math.sqrt(1 - beta2 ** t)) / (1 - beta1 ** t);
    const decayFactor = 1 - learningRate * weightDecay;

    for (const [name, m] of this.firstMoments) {
      const p = (params.get(name) as HostTensor).data;
      const g = gradients.get(name) as Float32Array;
      const v = this.secondMoments.get(name) as Float32Array;
      for (let i = 0; i < p.length; i++) {
        const gi = g[i];
        const mi = beta1 * m[i] + (1 - beta1) * gi;
        const vi = beta2 * v[i] + (1 - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = (p[i] - (stepSize * mi) / (Math.sqrt(vi) + epsilon)) * decayFactor;
      }
    }
    this.stepCount = t;
  }

  /** Returns copies of the moments and the step count, for a checkpoint. */
  exportState(): AdamWState {
    const copy = (moments: Map<string, Float32Array>): Map<string, HostTensor> => {
      const tensors = new Map<string, HostTensor>();
      for (const [name, values] of moments) tensors.set(name, floatTensor(this.shapes.get(name) ?? [values.length], values.slice()));
      return tensors;
    };
    return { stepCount: this.stepCount, firstMoments: copy(this.firstMoments), secondMoments: copy(this.secondMoments) };
  }

  /** Replaces the moments and step count with a checkpoint's. Throws {@link OptimizerError} for missing or mis-shaped moments. */
  importState(state: AdamWState): void {
    if (!Number.isSafeInteger(state.stepCount) || state.stepCount < 0) {
      throw new OptimizerError(`invalid optimizer step count ${state.stepCount}: expected an integer >= 0`);
    }
    for (const [kind, source, target] of [
      ['first', state.firstMoments, this.firstMoments],
      ['second', state.secondMoments, this.secondMoments],
    ] as const) {
      for (const [name, values] of target) {
        const stored = source.get(name);
        if (stored === undefined || stored.data.length !== values.length) {
          throw new OptimizerError(
            `optimizer state has ${stored === undefined ? 'no' : `a mis-shaped (${formatShape(stored.shape)})`} ${kind} moment for ${name}, ` +
              `expected ${formatShape(this.shapes.get(name) ?? [])}; the checkpoint belongs to a different module configuration`,
          );
        }
      }
    }
    for (const [name, values] of this.firstMoments) values.set((state.firstMoments.get(name) as HostTensor).data);
    for (const [name, values] of this.secondMoments) values.set((state.secondMoments.get(name) as HostTensor).data);
    this.stepCount = state.stepCount;
  }

  private checkGradients(params: ReadonlyMap<string, HostTensor>, gradients: ReadonlyMap<string, Float32Array>): void {
    for (const [name, m] of this.firstMoments) {
      const param = params.get(name);
      const gradient = gradients.get(name);
      if (param === undefined || param.data.length !== m.length) {
        throw new OptimizerError(`parameter ${name} is missing or has ${param?.data.length ?? 0} values, expected ${m.length}`);
      }
      if (gradient === undefined || gradient.length !== m.length) {
        throw new OptimizerError(`gradient of ${name} is missing or has ${gradient?.length ?? 0} values, expected ${m.length}`);
      }
      for (let i = 0; i < gradient.length; i++) {
        if (!Number.isFinite(gradient[i])) {
          throw new OptimizerError(
            `gradient of ${name} is ${gradient[i]} at flat index ${i}; training diverged, so lower --lr or check the data`,
          );
        }
      }
    }
  }
}

/**
 * Scales all gradients together so that their global L2 norm is at most `maxNorm`, as PyTorch's
 * `clip_grad_norm_` does (factor maxNorm / (norm + 1e-6), applied only when it is below 1).
 * Changes `gradients` in place and returns the norm before clipping.
 */
export function clipGradientNorm(gradients: ReadonlyMap<string, Float32Array>, maxNorm: number): number {
  let sumOfSquares = 0;
  for (const values of gradients.values()) {
    for (let i = 0; i < values.length; i++) sumOfSquares += values[i] * values[i];
  }
  const norm = Math.sqrt(sumOfSquares);
  const factor = maxNorm / (norm + 1e-6);
  if (factor < 1) {
    for (const values of gradients.values()) {
      for (let i = 0; i < values.length; i++) values[i] *= factor;
    }
  }
  return norm;
}
