/**
 * Training checkpoints: a folder with the loop state (`trainer_state.json`), the module
 * parameters, the AdamW moments and the best parameters so far, written atomically so that a
 * crash while saving keeps the previous checkpoint.
 * @module
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { parseSafetensors, SafetensorsError, serializeSafetensors } from '../model/safetensors.js';
import type { HostTensor } from '../model/tensor.js';
import { writeFileSynced } from '../util/durable-files.js';
import type { AdamWState } from './optimizer.js';

/** Version of the checkpoint layout; a reader rejects other versions. */
export const CHECKPOINT_FORMAT_VERSION = 1;

const STATE_FILE = 'trainer_state.json';
const PARAMS_FILE = 'module.safetensors';
const OPTIMIZER_FILE = 'optimizer.safetensors';
const BEST_FILE = 'best_module.safetensors';
const FIRST_MOMENT_PREFIX = 'exp_avg.';
const SECOND_MOMENT_PREFIX = 'exp_avg_sq.';

/** Error for a checkpoint that cannot be written or read; the message names the folder or file. */
export class CheckpointError extends Error {
  override readonly name = 'CheckpointError';
}

/** One point of the training-loss curve: the mean loss of the optimizer steps in a window. */
export interface LossPoint {
  /** Last optimizer step (1-based) of the window. */
  readonly step: number;
  readonly loss: number;
}

/** One evaluation: mean cross-entropy per target token of the eval set and its perplexity. */
export interface EvalPoint {
  /** Optimizer steps done before the evaluation (0 = the untrained module). */
  readonly step: number;
  readonly loss: number;
  readonly perplexity: number;
}

/** Position and history of the training loop, everything a resumed run needs besides tensors. */
export interface LoopState {
  /** Optimizer steps done. */
  readonly step: number;
  /** Epoch (0-based) of the next batch. */
  readonly epoch: number;
  /** Index of the next batch within the epoch's order. */
  readonly batchInEpoch: number;
  /** Target tokens and real tokens processed so far. */
  readonly targetTokensSeen: number;
  readonly tokensSeen: number;
  /** Seconds spent in training steps so far (evaluation excluded), for tokens/s. */
  readonly trainSeconds: number;
  /** Losses of every step of the current loss-curve window, not yet averaged. */
  readonly pendingLosses: readonly number[];
  readonly lossCurve: readonly LossPoint[];
  readonly evalCurve: readonly EvalPoint[];
  /** Lowest eval loss so far and the step it was measured at, or null before the first evaluation. */
  readonly bestEval: EvalPoint | null;
  /** Evaluations since the best one, for early stopping. */
  readonly evalsWithoutImprovement: number;
}

/** Everything a checkpoint folder stores. */
export interface TrainingCheckpoint {
  /**
   * Settings of the run as JSON (hyper-parameters, data hashes, seed); a resumed run compares
   * them with its own. The dropout and shuffle random streams are derived from the seed, the step
   * and the epoch, so the seed is their whole state.
   */
  readonly settings: Readonly<Record<string, unknown>>;
  readonly loop: LoopState;
  readonly params: ReadonlyMap<string, HostTensor>;
  readonly optimizer: AdamWState;
  /** Parameters at the best evaluation, or null when there was none. */
  readonly bestParams: ReadonlyMap<string, HostTensor> | null;
}


function serializeOptimizer(state: AdamWState): Uint8Array {
  const tensors = new Map<string, HostTensor>();
  for (const [name, tensor] of state.firstMoments) tensors.set(FIRST_MOMENT_PREFIX + name, tensor);
  for (const [name, tensor] of state.secondMoments) tensors.set(SECOND_MOMENT_PREFIX + name, tensor);
  return serializeSafetensors(tensors, { step_count: String(state.stepCount) });
}

/**
 * Writes a checkpoint folder at `dir`. The files go into a hidden sibling folder first, which then
 * replaces `dir`. The previous checkpoint is removed only after the new one is in place.
 * Throws {@link CheckpointError} when writing fails.
 */
export async function writeCheckpoint(dir: string, checkpoint: TrainingCheckpoint): Promise<void> {
  const target = path.resolve(dir);
  const parent = path.dirname(target);
  const suffix = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const staging = path.join(parent, `.${path.basename(target)}.tmp-${suffix}`);
  const previous = path.join(parent, `.${path.basename(target)}.old-${suffix}`);
  const state = {
    format_version: CHECKPOINT_FORMAT_VERSION,
    settings: checkpoint.settings,
    loop: checkpoint.loop,
    optimizer_step_count: checkpoint.optimizer.stepCount,
    has_best_module: checkpoint.bestParams !== null,
  };
  let movedPreviousAway = false;
  try {
    await mkdir(parent, { recursive: true });
    await mkdir(staging);
    await writeFileSynced(path.join(staging, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);
    await writeFileSynced(path.join(staging, PARAMS_FILE), serializeSafetensors(checkpoint.params));
    await writeFileSynced(path.join(staging, OPTIMIZER_FILE), serializeOptimizer(checkpoint.optimizer));
    if (checkpoint.bestParams !== null) await writeFileSynced(path.join(staging, BEST_FILE), serializeSafetensors(checkpoint.bestParams));
    const exists = await stat(target).then(() => true, () => false);
    if (exists) {
      await rename(target, previous);
      movedPreviousAway = true;
    }
    await rename(staging, target);
  } catch (cause) {
    if (movedPreviousAway) await rename(previous, target).catch(() => undefined);
    await rm(staging, { recursive: true, force: true }).catch(() => undefined);
    throw new CheckpointError(`failed to write checkpoint ${dir}: ${(cause as Error).message}; check that the folder is writable`, { cause });
  }
  if (movedPreviousAway) await rm(previous, { recursive: true, force: true });
}

async function readTensors(file: string): Promise<{ tensors: Map<string, HostTensor>; metadata: Record<string, string> }> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (cause) {
    throw new CheckpointError(`failed to read checkpoint file ${file}: ${(cause as Error).message}`, { cause });
  }
  try {
    const contents = parseSafetensors(bytes, file);
    return { tensors: contents.tensors, metadata: { ...contents.metadata } };
  } catch (cause) {
    if (!(cause instanceof SafetensorsError)) throw cause;
    throw new CheckpointError(cause.message, { cause });
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Reads a checkpoint folder written by {@link writeCheckpoint}. Throws {@link CheckpointError}
 * for a missing folder or file, another format version, or corrupted contents.
 */
export async function readCheckpoint(dir: string): Promise<TrainingCheckpoint> {
  const stateFile = path.join(dir, STATE_FILE);
  let text: string;
  try {
    text = await readFile(stateFile, 'utf8');
  } catch (cause) {
    throw new CheckpointError(
      `${dir} is not a training checkpoint (${STATE_FILE} cannot be read: ${(cause as Error).message}); ` +
        'pass the checkpoint folder that `inducer train` named when it stopped',
      { cause },
    );
  }
  let state: unknown;
  try {
    state = JSON.parse(text);
  } catch (cause) {
    throw new CheckpointError(`${stateFile} is not valid JSON (${(cause as Error).message}); the checkpoint is corrupted`, { cause });
  }
  if (!isObject(state) || state.format_version !== CHECKPOINT_FORMAT_VERSION || !isObject(state.settings) || !isObject(state.loop)) {
    throw new CheckpointError(
      `${stateFile} is not a version ${CHECKPOINT_FORMAT_VERSION} training checkpoint; it was written by another version of inducer or is corrupted`,
    );
  }

  const params = (await readTensors(path.join(dir, PARAMS_FILE))).tensors;
  const optimizerFile = path.join(dir, OPTIMIZER_FILE);
  const { tensors: moments, metadata } = await readTensors(optimizerFile);
  const firstMoments = new Map<string, HostTensor>();
  const secondMoments = new Map<string, HostTensor>();
  for (const [name, tensor] of moments) {
    if (name.startsWith(SECOND_MOMENT_PREFIX)) secondMoments.set(name.slice(SECOND_MOMENT_PREFIX.length), tensor);
    else if (name.startsWith(FIRST_MOMENT_PREFIX)) firstMoments.set(name.slice(FIRST_MOMENT_PREFIX.length), tensor);
    else throw new CheckpointError(`${optimizerFile}: unexpected tensor ${name}; the checkpoint is corrupted`);
  }
  const stepCount = Number(metadata.step_count);
  const bestParams = state.has_best_module === true ? (await readTensors(path.join(dir, BEST_FILE))).tensors : null;
  return {
    settings: state.settings,
    loop: state.loop as unknown as LoopState, // written by writeCheckpoint from a LoopState
    params,
    optimizer: { stepCount, firstMoments, secondMoments },
    bestParams,
  };
}
