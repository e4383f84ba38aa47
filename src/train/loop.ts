/**
 * The training loop: batches in a seeded order, one forward/backward per optimizer step,
 * gradient clipping, AdamW with a learning-rate schedule, periodic evaluation with early
 * stopping, checkpoints and interruption. The model-specific work is behind
 * {@link TrainableSession}, so the loop runs the same against the ONNX training session and a
 * small test double.
 * @module
 */
import { floatTensor, type HostTensor } from '../model/tensor.js';
import type { EvalPoint, LoopState, LossPoint, TrainingCheckpoint } from './checkpoint.js';
import { collateBatch, countBatchTokens, deriveSeed, planEpoch, type TrainingBatch, type TrainingExample } from './data.js';
import { AdamW, clipGradientNorm, type AdamWSettings } from './optimizer.js';
import { learningRateAt, validateSchedule, type ScheduleKind } from './schedule.js';

/** Result of one forward and backward pass. */
export interface SessionStepResult {
  /** Mean loss over the batch's target tokens (with label smoothing when enabled), before the update. */
  readonly loss: number;
  readonly numTargetTokens: number;
  /** d loss / d parameter, by module tensor name. */
  readonly gradients: ReadonlyMap<string, Float32Array>;
}

/** Training session as the loop uses it; `TrainingSession` has this shape. */
export interface TrainableSession {
  /** Names and shapes of the trained tensors. */
  readonly parameterShapes: ReadonlyMap<string, readonly number[]>;
  /** Forward and backward pass; dropout is drawn from `dropoutSeed`. */
  step(batch: TrainingBatch, params: ReadonlyMap<string, HostTensor>, dropoutSeed: number): Promise<SessionStepResult>;
  /** Plain cross-entropy without dropout or label smoothing: sum of token losses and the token count. */
  evaluate(batch: TrainingBatch, params: ReadonlyMap<string, HostTensor>): Promise<{ lossSum: number; numTargetTokens: number }>;
}

/** Settings of one training run. */
export interface LoopSettings {
  readonly batchSize: number;
  /** Shuffle the examples every epoch (seeded); false keeps the file order. */
  readonly shuffle: boolean;
  readonly bucketByLength: boolean;
  /** Seed of the shuffle and dropout streams. */
  readonly seed: number;
  /** Optimizer steps of the whole run. */
  readonly totalSteps: number;
  readonly schedule: ScheduleKind;
  readonly learningRate: number;
  readonly warmupSteps: number;
  readonly adamw: AdamWSettings;
  /** Global L2 norm that gradients are clipped to. */
  readonly maxGradNorm: number;
  /** Optimizer steps between evaluations (and checkpoints); the last step always evaluates. */
  readonly evalEvery: number;
  /** Stop after this many evaluations without a lower eval loss, or null to never stop early. */
  readonly earlyStoppingPatience: number | null;
}

/** Progress of one optimizer step, passed to `onStep`. */
export interface StepReport {
  /** Optimizer steps done, including this one (1-based). */
  readonly step: number;
  readonly totalSteps: number;
  readonly epoch: number;
  /** Mean loss over the batch's target tokens, before the update. */
  readonly loss: number;
  readonly learningRate: number;
  /** Real (unpadded) tokens of the batch. */
  readonly tokens: number;
  readonly targetTokens: number;
  /** Global gradient norm before clipping. */
  readonly gradientNorm: number;
  /** Real tokens per second of training-step time over the whole run so far. */
  readonly tokensPerSecond: number;
}

/** Inputs of {@link runTrainingLoop}. */
export interface LoopInputs {
  readonly session: TrainableSession;
  /** Parameters to train, updated in place; a resumed run overwrites them from the checkpoint. */
  readonly params: Map<string, HostTensor>;
  readonly trainExamples: readonly TrainingExample[];
  /** Examples of the eval set, or null to train without evaluation (the last parameters are the result). */
  readonly evalExamples: readonly TrainingExample[] | null;
  /** Token id written into padding positions. */
  readonly padId: number;
  readonly settings: LoopSettings;
  /** Stored with every checkpoint; a resumed run has already compared it with the stored one. */
  readonly checkpointSettings: Readonly<Record<string, unknown>>;
  /** Checkpoint to continue from. */
  readonly resume?: TrainingCheckpoint;
  /** Called after every evaluation (or every `evalEvery` steps without an eval set) and on interruption. */
  readonly saveCheckpoint?: (checkpoint: TrainingCheckpoint) => Promise<void>;
  /** When aborted, the loop saves a checkpoint after the current step and throws {@link TrainingInterruptedError}. */
  readonly signal?: AbortSignal;
  readonly onStep?: (report: StepReport) => void | Promise<void>;
  readonly onEval?: (point: EvalPoint, isBest: boolean) => void;
}

/** Outcome of {@link runTrainingLoop}. */
export interface LoopResult {
  /**
   * Parameters to publish: those with the lowest eval loss when there is an eval set (the
   * untrained ones if training never improved on them), else the last ones.
   */
  readonly selectedParams: Map<string, HostTensor>;
  /** Step the selected parameters come from. */
  readonly selectedStep: number;
  readonly state: LoopState;
  readonly stoppedEarly: boolean;
}

/** Error thrown when the run was interrupted; a checkpoint was saved first when `checkpointSaved`. */
export class TrainingInterruptedError extends Error {
  override readonly name = 'TrainingInterruptedError';
  constructor(
    message: string,
    readonly step: number,
    readonly checkpointSaved: boolean,
  ) {
    super(message);
  }
}

/** Error for loop settings outside their ranges or a resume state that does not fit the run. */
export class LoopSettingsError extends Error {
  override readonly name = 'LoopSettingsError';
}

/** Maximum number of points in the training-loss curve; steps are averaged in windows to stay below it. */
const MAX_LOSS_CURVE_POINTS = 500;

type MutableLoopState = { -readonly [K in keyof LoopState]: LoopState[K] };

function copyTensors(tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const copy = new Map<string, HostTensor>();
  for (const [name, tensor] of tensors) copy.set(name, floatTensor(tensor.shape, tensor.data.slice()));
  return copy;
}

function initialState(): MutableLoopState {
  return {
    step: 0,
    epoch: 0,
    batchInEpoch: 0,
    targetTokensSeen: 0,
    tokensSeen: 0,
    trainSeconds: 0,
    pendingLosses: [],
    lossCurve: [],
    evalCurve: [],
    bestEval: null,
    evalsWithoutImprovement: 0,
  };
}

function checkSettings(settings: LoopSettings): void {
  const positiveInteger = (name: string, value: number): void => {
    if (!Number.isSafeInteger(value) || value < 1) throw new LoopSettingsError(`invalid ${name} ${value}: expected an integer >= 1`);
  };
  positiveInteger('batch size', settings.batchSize);
  positiveInteger('total step count', settings.totalSteps);
  positiveInteger('evaluation interval', settings.evalEvery);
  if (settings.earlyStoppingPatience !== null) positiveInteger('early-stopping patience', settings.earlyStoppingPatience);
  if (!Number.isFinite(settings.maxGradNorm) || settings.maxGradNorm <= 0) {
    throw new LoopSettingsError(`invalid gradient clipping norm ${settings.maxGradNorm}: expected a finite number > 0`);
  }
  validateSchedule({
    kind: settings.schedule,
    peakLearningRate: settings.learningRate,
    warmupSteps: settings.warmupSteps,
    totalSteps: settings.totalSteps,
  });
}

/** Computes the mean cross-entropy per target token of `examples` in file order, in batches of `batchSize`. */
export async function evaluateExamples(
  session: TrainableSession,
  params: ReadonlyMap<string, HostTensor>,
  examples: readonly TrainingExample[],
  batchSize: number,
  padId: number,
): Promise<{ loss: number; perplexity: number; numTargetTokens: number }> {
  let lossSum = 0;
  let numTargetTokens = 0;
  for (let start = 0; start < examples.length; start += batchSize) {
    const indices: number[] = [];
    for (let i = start; i < Math.min(start + batchSize, examples.length); i++) indices.push(i);
    const result = await session.evaluate(collateBatch(examples, indices, padId), params);
    lossSum += result.lossSum;
    numTargetTokens += result.numTargetTokens;
  }
  const loss = lossSum / numTargetTokens;
  return { loss, perplexity: Math.exp(loss), numTargetTokens };
}

/**
 * Runs the training loop to `settings.totalSteps` optimizer steps, or until early stopping.
 *
 * Each step takes the next batch of the epoch's seeded order ({@link planEpoch}), runs the
 * session's forward and backward pass with a dropout seed derived from the run seed and the step,
 * clips the gradients to `maxGradNorm` and applies AdamW with the scheduled learning rate. With an
 * eval set, the untrained parameters are evaluated first, then every `evalEvery` steps and after
 * the last step; each evaluation saves a checkpoint. Because every random stream is a function of
 * the seed, the epoch and the step, a run resumed from a checkpoint computes the same losses and
 * parameters as an uninterrupted one.
 *
 * Throws {@link TrainingInterruptedError} after saving a checkpoint when `signal` aborts, and
 * passes on errors of the session, the optimizer (for example a non-finite gradient) and
 * `saveCheckpoint`.
 */
export async function runTrainingLoop(inputs: LoopInputs): Promise<LoopResult> {
  const { session, params, trainExamples, evalExamples, padId, settings } = inputs;
  checkSettings(settings);
  const optimizer = new AdamW(session.parameterShapes, settings.adamw);
  const state: MutableLoopState = initialState();
  let bestParams: Map<string, HostTensor> | null = null;

  if (inputs.resume !== undefined) {
    const resume = inputs.resume;
    if (resume.loop.step > settings.totalSteps) {
      throw new LoopSettingsError(`the checkpoint is at step ${resume.loop.step}, beyond this run's ${settings.totalSteps} steps`);
    }
    for (const [name, tensor] of params) {
      const stored = resume.params.get(name);
      if (stored === undefined || stored.data.length !== tensor.data.length) {
        throw new LoopSettingsError(`the checkpoint has no parameter ${name} of ${tensor.data.length} values; it belongs to another module configuration`);
      }
      tensor.data.set(stored.data);
    }
    optimizer.importState(resume.optimizer);
    Object.assign(state, resume.loop, {
      pendingLosses: [...resume.loop.pendingLosses],
      lossCurve: [...resume.loop.lossCurve],
      evalCurve: [...resume.loop.evalCurve],
    });
    bestParams = resume.bestParams === null ? null : copyTensors(resume.bestParams);
  }

  const lengths = trainExamples.map((example) => example.inputIds.length);
  const planSettings = { batchSize: settings.batchSize, shuffle: settings.shuffle, seed: settings.seed, bucketByLength: settings.bucketByLength };
  const scheduleSettings = {
    kind: settings.schedule,
    peakLearningRate: settings.learningRate,
    warmupSteps: settings.warmupSteps,
    totalSteps: settings.totalSteps,
  };
  const lossWindow = Math.max(1, Math.ceil(settings.totalSteps / MAX_LOSS_CURVE_POINTS));
  let plan: number[][] = planEpoch(lengths, state.epoch, planSettings);

  const snapshot = (): TrainingCheckpoint => ({
    settings: inputs.checkpointSettings,
    loop: { ...state, pendingLosses: [...state.pendingLosses], lossCurve: [...state.lossCurve], evalCurve: [...state.evalCurve] },
    params: copyTensors(params),
    optimizer: optimizer.exportState(),
    bestParams,
  });

  const evaluate = async (): Promise<void> => {
    if (evalExamples === null) return;
    const result = await evaluateExamples(session, params, evalExamples, settings.batchSize, padId);
    const point: EvalPoint = { step: state.step, loss: result.loss, perplexity: result.perplexity };
    state.evalCurve = [...state.evalCurve, point];
    const isBest = state.bestEval === null || point.loss < state.bestEval.loss;
    if (isBest) {
      state.bestEval = point;
      state.evalsWithoutImprovement = 0;
      bestParams = copyTensors(params);
    } else {
      state.evalsWithoutImprovement++;
    }
    inputs.onEval?.(point, isBest);
  };

  if (evalExamples !== null && state.evalCurve.length === 0) await evaluate();
  const patience = settings.earlyStoppingPatience;
  // A checkpoint of the last step has not stopped early even when patience ran out there, as in the loop below.
  let stoppedEarly =
    evalExamples !== null &&
    patience !== null &&
    state.evalCurve.length > 1 &&
    state.evalsWithoutImprovement >= patience &&
    state.step < settings.totalSteps;

  while (state.step < settings.totalSteps && !stoppedEarly) {
    // Yield to the event loop once per step, so that a SIGINT handler can run even when the
    // session's promises resolve without I/O.
    await new Promise((resolve) => setImmediate(resolve));
    if (inputs.signal?.aborted) {
      let saved = false;
      if (inputs.saveCheckpoint !== undefined) {
        await inputs.saveCheckpoint(snapshot());
        saved = true;
      }
      throw new TrainingInterruptedError(`training interrupted after step ${state.step} of ${settings.totalSteps}`, state.step, saved);
    }
    if (state.batchInEpoch >= plan.length) {
      state.epoch++;
      state.batchInEpoch = 0;
      plan = planEpoch(lengths, state.epoch, planSettings);
      continue;
    }

    const batch = collateBatch(trainExamples, plan[state.batchInEpoch], padId);
    const learningRate = learningRateAt(state.step, scheduleSettings);
    const started = performance.now();
    const result = await session.step(batch, params, deriveSeed(settings.seed, 3, state.step));
    if (!Number.isFinite(result.loss)) {
      throw new LoopSettingsError(`the loss of step ${state.step + 1} is ${result.loss}; training diverged, so lower --lr or check the data`);
    }
    const gradientNorm = clipGradientNorm(result.gradients, settings.maxGradNorm);
    optimizer.step(params, result.gradients, learningRate);
    const tokens = countBatchTokens(batch);

    state.trainSeconds += (performance.now() - started) / 1000;
    state.step++;
    state.batchInEpoch++;
    state.tokensSeen += tokens;
    state.targetTokensSeen += result.numTargetTokens;
    state.pendingLosses = [...state.pendingLosses, result.loss];
    if (state.pendingLosses.length === lossWindow || state.step === settings.totalSteps) {
      const mean = state.pendingLosses.reduce((sum, loss) => sum + loss, 0) / state.pendingLosses.length;
      state.lossCurve = [...state.lossCurve, { step: state.step, loss: mean } satisfies LossPoint];
      state.pendingLosses = [];
    }
    await inputs.onStep?.({
      step: state.step,
      totalSteps: settings.totalSteps,
      epoch: state.epoch,
      loss: result.loss,
      learningRate,
      tokens,
      targetTokens: result.numTargetTokens,
      gradientNorm,
      tokensPerSecond: state.trainSeconds > 0 ? state.tokensSeen / state.trainSeconds : 0,
    });

    const isLast = state.step === settings.totalSteps;
    if (state.step % settings.evalEvery === 0 || isLast) {
      await evaluate();
      stoppedEarly = evalExamples !== null && patience !== null && state.evalsWithoutImprovement >= patience && !isLast;
      // The last step saves too, so that a failure while writing the output can be retried with --resume.
      if (inputs.saveCheckpoint !== undefined) await inputs.saveCheckpoint(snapshot());
    }
  }

  const finalBest = bestParams as Map<string, HostTensor> | null;
  const useBest = evalExamples !== null && finalBest !== null && state.bestEval !== null;
  return {
    selectedParams: useBest ? copyTensors(finalBest) : copyTensors(params),
    selectedStep: useBest ? (state.bestEval as EvalPoint).step : state.step,
    state: { ...state },
    stoppedEarly,
  };
}
