/**
 * A training-session double with a quadratic loss whose gradient is known in closed form, for
 * testing the loop, checkpoints and the train command without the ONNX training graph.
 *
 * Every target token y has a target value a(y) = 0.01 · ((y mod 5) − 2). With all trained values
 * w_1..w_N concatenated, the loss of one token is ½ · mean_i (w_i − a(y))², and a batch's loss is
 * the mean over its target tokens, so d loss / d w_i = (w_i − ā) / N with ā the batch mean of
 * a(y). `step` adds a small pseudo-random term drawn from the dropout seed to each gradient, so
 * runs differ when the seed stream differs, as dropout makes them differ.
 * @module
 */
import type { HostTensor } from '../../src/model/tensor.js';
import type { TrainingBatch } from '../../src/train/data.js';
import type { SessionStepResult, TrainableSession } from '../../src/train/loop.js';
import { createRng } from '../../src/runtime/rng.js';

/** Target value of a token id. */
export function targetOf(tokenId: number): number {
  return 0.01 * ((tokenId % 5) - 2);
}

/** Size of the pseudo-random gradient term drawn from the dropout seed. */
export const NOISE_SCALE = 1e-4;

/** Collects the target token ids of a batch (labels other than −100). */
export function targetIds(batch: TrainingBatch): number[] {
  const ids: number[] = [];
  for (const row of batch.labels) for (const label of row) if (label !== -100) ids.push(label);
  return ids;
}

export class QuadraticSession implements TrainableSession {
  readonly parameterShapes: ReadonlyMap<string, readonly number[]>;
  /** Batches passed to `step`, in call order, with their dropout seeds. */
  readonly stepCalls: { batch: TrainingBatch; dropoutSeed: number }[] = [];
  disposed = false;

  constructor(shapes: ReadonlyMap<string, readonly number[]>) {
    this.parameterShapes = shapes;
  }

  private get numValues(): number {
    let n = 0;
    for (const shape of this.parameterShapes.values()) n += shape.reduce((a, b) => a * b, 1);
    return n;
  }

  /** Sum over tokens of ½ · mean_i (w_i − a(y))², computed from Σw and Σw². */
  private lossSum(ids: readonly number[], params: ReadonlyMap<string, HostTensor>): number {
    let sum = 0;
    let sumOfSquares = 0;
    for (const name of this.parameterShapes.keys()) {
      for (const value of (params.get(name) as HostTensor).data) {
        sum += value;
        sumOfSquares += value * value;
      }
    }
    const n = this.numValues;
    let total = 0;
    for (const id of ids) {
      const a = targetOf(id);
      total += (0.5 * (sumOfSquares - 2 * a * sum + n * a * a)) / n;
    }
    return total;
  }

  async step(batch: TrainingBatch, params: ReadonlyMap<string, HostTensor>, dropoutSeed: number): Promise<SessionStepResult> {
    this.stepCalls.push({ batch, dropoutSeed });
    const ids = targetIds(batch);
    const meanTarget = ids.reduce((total, id) => total + targetOf(id), 0) / ids.length;
    const n = this.numValues;
    const rng = createRng(dropoutSeed);
    const gradients = new Map<string, Float32Array>();
    for (const name of this.parameterShapes.keys()) {
      const values = (params.get(name) as HostTensor).data;
      const gradient = new Float32Array(values.length);
      for (let i = 0; i < values.length; i++) gradient[i] = (values[i] - meanTarget) / n + NOISE_SCALE * (rng.nextFloat() - 0.5);
      gradients.set(name, gradient);
    }
    return { loss: this.lossSum(ids, params) / ids.length, numTargetTokens: ids.length, gradients };
  }

  async evaluate(batch: TrainingBatch, params: ReadonlyMap<string, HostTensor>): Promise<{ lossSum: number; numTargetTokens: number }> {
    const ids = targetIds(batch);
    return { lossSum: this.lossSum(ids, params), numTargetTokens: ids.length };
  }

  async dispose(): Promise<void> {
    this.disposed = true;
  }
}
