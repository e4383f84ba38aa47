/**
 * `training_report.json`, written next to a trained module, and the short `training` summary that
 * goes into the module's `adapter_config.json`.
 * @module
 */
import os from 'node:os';
import type { EvalPoint, LoopState, LossPoint } from './checkpoint.js';
import type { TokenizationStats } from './data.js';

/** Version of the report layout. */
export const REPORT_FORMAT_VERSION = 1;

/** File name of the report inside the output folder. */
export const REPORT_FILE = 'training_report.json';

/** One data file of the run with its tokenization counts. */
export interface DataSetReport {
  readonly file: string;
  /** SHA-256 of the file's bytes, hexadecimal. */
  readonly sha256: string;
  readonly stats: TokenizationStats;
}

/** Inputs of {@link buildTrainingReport}. */
export interface ReportInputs {
  readonly model: { readonly dir: string; readonly modelType: string; readonly weightsSha256: string };
  /** Hyper-parameters of the run as given to the loop and the session, in JSON form. */
  readonly hyperParameters: Readonly<Record<string, unknown>>;
  readonly train: DataSetReport;
  readonly eval: DataSetReport | null;
  readonly state: LoopState;
  readonly totalSteps: number;
  readonly stepsPerEpoch: number;
  readonly stoppedEarly: boolean;
  readonly selectedStep: number;
  /** Seconds from the start of the command (or of the resumed part) to the end of training. */
  readonly wallSeconds: number;
  /** Step at which this process started (non-zero for a resumed run). */
  readonly resumedFromStep: number;
}

/** A data file as the report lists it. */
export interface DataSetSummary {
  readonly file: string;
  readonly sha256: string;
  readonly records: number;
  readonly examples: number;
  readonly truncated: number;
  readonly skipped_long_prompt: number;
  readonly skipped_no_target: number;
  readonly boundary_merges: number;
  readonly tokens: number;
  readonly target_tokens: number;
}

function summarizeDataSet(data: DataSetReport): DataSetSummary {
  const { stats } = data;
  return {
    file: data.file,
    sha256: data.sha256,
    records: stats.numRecords,
    examples: stats.numExamples,
    truncated: stats.numTruncated,
    skipped_long_prompt: stats.numSkippedLongPrompt,
    skipped_no_target: stats.numSkippedNoTarget,
    boundary_merges: stats.numBoundaryMerges,
    tokens: stats.numTokens,
    target_tokens: stats.numTargetTokens,
  };
}

/** Contents of `training_report.json`. */
export interface TrainingReport {
  readonly format_version: number;
  readonly finished_at: string;
  readonly model: { readonly dir: string; readonly model_type: string; readonly weights_sha256: string };
  readonly hyper_parameters: Readonly<Record<string, unknown>>;
  readonly data: {
    readonly train: DataSetSummary;
    readonly eval: DataSetSummary | null;
  };
  readonly progress: {
    readonly planned_steps: number;
    readonly steps: number;
    readonly epochs: number;
    readonly stopped_early: boolean;
    readonly resumed_from_step: number;
    /** Step whose parameters the module holds: the best evaluation, or the last step without an eval set. */
    readonly selected_step: number;
  };
  readonly loss_curve: readonly LossPoint[];
  readonly eval_curve: readonly EvalPoint[];
  readonly initial_eval: EvalPoint | null;
  readonly final_eval: EvalPoint | null;
  readonly best_eval: EvalPoint | null;
  readonly tokens_seen: number;
  readonly target_tokens_seen: number;
  /** Seconds in forward/backward passes and optimizer updates, over all parts of a resumed run. */
  readonly train_seconds: number;
  /** Wall time of this process's part of the run, including loading, evaluation and checkpoints. */
  readonly wall_seconds: number;
  /** Real (unpadded) training tokens per second of `train_seconds`. */
  readonly tokens_per_second: number;
  readonly machine: { readonly cpus: number; readonly cpu_model: string; readonly node: string; readonly platform: string };
}

/** Builds the report from the run's inputs and final loop state. */
export function buildTrainingReport(inputs: ReportInputs): TrainingReport {
  const { state } = inputs;
  const evalCurve = state.evalCurve;
  const cpus = os.cpus();
  return {
    format_version: REPORT_FORMAT_VERSION,
    finished_at: new Date().toISOString(),
    model: { dir: inputs.model.dir, model_type: inputs.model.modelType, weights_sha256: inputs.model.weightsSha256 },
    hyper_parameters: inputs.hyperParameters,
    data: { train: summarizeDataSet(inputs.train), eval: inputs.eval === null ? null : summarizeDataSet(inputs.eval) },
    progress: {
      planned_steps: inputs.totalSteps,
      steps: state.step,
      epochs: inputs.stepsPerEpoch > 0 ? state.step / inputs.stepsPerEpoch : 0,
      stopped_early: inputs.stoppedEarly,
      resumed_from_step: inputs.resumedFromStep,
      selected_step: inputs.selectedStep,
    },
    loss_curve: state.lossCurve,
    eval_curve: evalCurve,
    initial_eval: evalCurve.find((point) => point.step === 0) ?? null,
    final_eval: evalCurve.length > 0 ? evalCurve[evalCurve.length - 1] : null,
    best_eval: state.bestEval,
    tokens_seen: state.tokensSeen,
    target_tokens_seen: state.targetTokensSeen,
    train_seconds: state.trainSeconds,
    wall_seconds: inputs.wallSeconds,
    tokens_per_second: state.trainSeconds > 0 ? state.tokensSeen / state.trainSeconds : 0,
    machine: { cpus: cpus.length, cpu_model: cpus[0]?.model ?? 'unknown', node: process.version, platform: `${process.platform}-${process.arch}` },
  };
}

/** Returns the short summary stored as `training` in `adapter_config.json`. */
export function summarizeTraining(report: TrainingReport): Record<string, unknown> {
  const lastLoss = report.loss_curve.length > 0 ? report.loss_curve[report.loss_curve.length - 1].loss : null;
  const selectedEval = report.eval_curve.find((point) => point.step === report.progress.selected_step) ?? null;
  return {
    train_file: report.data.train.file,
    train_examples: report.data.train.examples,
    eval_file: report.data.eval?.file ?? null,
    steps: report.progress.steps,
    epochs: report.progress.epochs,
    selected_step: report.progress.selected_step,
    learning_rate: report.hyper_parameters.learning_rate ?? null,
    batch_size: report.hyper_parameters.batch_size ?? null,
    seed: report.hyper_parameters.seed ?? null,
    final_train_loss: lastLoss,
    initial_eval_loss: report.initial_eval?.loss ?? null,
    eval_loss: selectedEval?.loss ?? null,
    eval_perplexity: selectedEval?.perplexity ?? null,
    finished_at: report.finished_at,
  };
}
