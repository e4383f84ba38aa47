/**
 * Learning-rate schedules: linear warm-up from 0, then linear decay to 0, cosine decay to 0, or a
 * constant rate. The formulas are those of Hugging Face transformers'
 * `get_linear_schedule_with_warmup`, `get_cosine_schedule_with_warmup` and
 * `get_constant_schedule_with_warmup`, evaluated at the 0-based index of the optimizer step.
 * @module
 */

/** Shape of the learning rate after warm-up. */
export type ScheduleKind = 'linear' | 'cosine' | 'constant';

/** All schedule kinds, for option parsing and messages. */
export const SCHEDULE_KINDS: readonly ScheduleKind[] = ['linear', 'cosine', 'constant'];

/** Settings of a learning-rate schedule. */
export interface ScheduleSettings {
  readonly kind: ScheduleKind;
  /** Learning rate reached at the end of warm-up. */
  readonly peakLearningRate: number;
  /** Optimizer steps of linear warm-up from 0 (0 for none). */
  readonly warmupSteps: number;
  /** Optimizer steps of the whole run; linear and cosine decay reach 0 here. */
  readonly totalSteps: number;
}

/** Error for schedule settings outside their ranges. */
export class ScheduleError extends Error {
  override readonly name = 'ScheduleError';
}

/** Throws {@link ScheduleError} naming the first invalid setting. */
export function validateSchedule(settings: ScheduleSettings): void {
  if (!SCHEDULE_KINDS.includes(settings.kind)) {
    throw new ScheduleError(`invalid schedule "${String(settings.kind)}": expected one of ${SCHEDULE_KINDS.join(', ')}`);
  }
  if (!Number.isFinite(settings.peakLearningRate) || settings.peakLearningRate < 0) {
    throw new ScheduleError(`invalid learning rate ${settings.peakLearningRate}: expected a finite number >= 0`);
  }
  if (!Number.isSafeInteger(settings.totalSteps) || settings.totalSteps < 1) {
    throw new ScheduleError(`invalid total step count ${settings.totalSteps}: expected an integer >= 1`);
  }
  if (!Number.isSafeInteger(settings.warmupSteps) || settings.warmupSteps < 0) {
    throw new ScheduleError(`invalid warm-up step count ${settings.warmupSteps}: expected an integer >= 0`);
  }
}

/**
 * Returns the learning rate of optimizer step `step` (0-based). During warm-up it is
 * `peak · step / warmupSteps`, so the first step of a run with warm-up has rate 0, as in
 * transformers. After warm-up, linear decay is `peak · (total − step) / (total − warmup)` and
 * cosine decay is `peak · ½ (1 + cos(π · (step − warmup) / (total − warmup)))`; both are clamped
 * at 0 beyond `totalSteps`.
 */
export function learningRateAt(step: number, settings: ScheduleSettings): number {
  const { kind, peakLearningRate: peak, warmupSteps: warmup, totalSteps: total } = settings;
  if (step < warmup) return (peak * step) / warmup;
  if (kind === 'constant') return peak;

  const decaySteps = Math.max(1, total - warmup);
  const progress = Math.min(1, (step - warmup) / decaySteps);
  if (kind === 'linear') return peak * Math.max(0, 1 - progress);
  return peak * 0.5 * (1 + Math.cos(Math.PI * progress));
}
