/**
 * `inducer train`: train a tuning module (inducer-tuning, or the prefix-tuning and LoRA
 * baselines) on a JSONL data set and write the module folder with its `training_report.json`.
 *
 * While training runs, checkpoints go to `<out>-checkpoint/`, which is removed after the module
 * is written. The finished module is assembled in a hidden sibling folder and then renamed to
 * `--out`, so an error or interruption never leaves a partial module behind.
 * @module
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, rmdir, stat, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { readModule, writeModule } from '../adapters/module-files.js';
import type { AdapterTask } from '../adapters/adapter-config.js';
import { createModule, createTuningModule, hyperParamsOf } from '../adapters/module.js';
import { loadCheckpoint, type Checkpoint } from '../model/checkpoint.js';
import type { ModelConfig } from '../model/config.js';
import { fingerprintModel, type BaseModelFingerprint } from '../model/fingerprint.js';
import type { HostTensor } from '../model/tensor.js';
import { loadTokenizer } from '../model/tokenizer.js';
import { readCheckpoint, writeCheckpoint, type TrainingCheckpoint } from '../train/checkpoint.js';
import { batchesPerEpoch, readJsonlFile, tokenizeRecords, type TokenizationStats, type TrainingExample } from '../train/data.js';
import { TrainingSession } from '../train/training-session.js';
import { runTrainingLoop, TrainingInterruptedError, type LoopResult, type LoopSettings, type TrainableSession } from '../train/loop.js';
import { DEFAULT_ADAMW } from '../train/optimizer.js';
import { createProgressReporter, formatDuration, type ProgressReporter } from '../train/progress.js';
import { buildTrainingReport, REPORT_FILE, summarizeTraining, type DataSetReport } from '../train/report.js';
import { SCHEDULE_KINDS, type ScheduleKind } from '../train/schedule.js';
import { initModuleTensors, methodOf, type MethodSettings, type TuningMethod } from '../tuning/method.js';
import { integerOption, numberOption, pathOption } from './options.js';

/** Options of `inducer train` as commander parses them. */
export interface TrainOptions {
  model: string;
  data: string;
  eval?: string;
  out: string;
  method: string;
  keyRank: number;
  valueRank: number;
  loraQRank?: number;
  loraQAlpha?: number;
  prefixLength?: number;
  loraRank?: number;
  loraAlpha?: number;
  init: string;
  epochs?: number;
  maxSteps?: number;
  batchSize: number;
  lr: number;
  weightDecay: number;
  warmupSteps?: number;
  schedule: string;
  labelSmoothing: number;
  dropout: number;
  maxLength?: number;
  evalEvery?: number;
  earlyStopping?: number;
  shuffle: boolean;
  bucketByLength?: boolean;
  seed: number;
  resume?: string;
  logJsonl?: string;
}

/** A training session as the command uses it; `TrainingSession` has this shape. */
export interface DisposableSession extends TrainableSession {
  dispose(): Promise<void>;
}

/** Creates the training session for a model; tests pass a double, the command uses `TrainingSession.create`. */
export type SessionFactory = (
  config: ModelConfig,
  weights: ReadonlyMap<string, HostTensor>,
  hp: MethodSettings,
  options: { labelSmoothing: number; dropout: number },
) => Promise<DisposableSession>;

/** Error for invalid option combinations, an unusable `--out` or a checkpoint that does not fit the run. */
export class TrainCommandError extends Error {
  override readonly name = 'TrainCommandError';
}

/** Epochs when neither --epochs nor --max-steps is given (the official code trains up to 10). */
const DEFAULT_EPOCHS = 10;
/** Warm-up of the official code. By default a run spends at most 10% of its steps on warm-up; --warmup-steps overrides both. */
const PAPER_WARMUP_STEPS = 500;
const MAX_DEFAULT_WARMUP_FRACTION = 0.1;
/** Maximum example length in tokens when --max-length is not given; the model's context caps it too. */
const DEFAULT_MAX_LENGTH = 512;
/** Gradient-norm clipping of the official code. */
const MAX_GRAD_NORM = 1;
/** Virtual tokens per layer of a prefix module when --prefix-length is not given. */
const DEFAULT_PREFIX_LENGTH = 10;
/** Rank of a LoRA module when --lora-rank is not given. */
const DEFAULT_LORA_RANK = 8;

/** The methods `--method` accepts. */
const METHODS: readonly TuningMethod[] = ['inducer', 'prefix', 'lora'];

/** Options that set the hyper-parameters of each method; the others' options are rejected with it. */
const METHOD_OPTIONS: Readonly<Record<TuningMethod, readonly ('keyRank' | 'valueRank' | 'loraQRank' | 'loraQAlpha' | 'prefixLength' | 'loraRank' | 'loraAlpha')[]>> = {
  inducer: ['keyRank', 'valueRank', 'loraQRank', 'loraQAlpha'],
  prefix: ['prefixLength'],
  lora: ['loraRank', 'loraAlpha'],
};

/** Options that a resumed run takes from the checkpoint unless they are given again with the same value. */
const RESUMABLE_OPTIONS = [
  'method',
  'keyRank',
  'valueRank',
  'loraQRank',
  'loraQAlpha',
  'prefixLength',
  'loraRank',
  'loraAlpha',
  'init',
  'epochs',
  'maxSteps',
  'batchSize',
  'lr',
  'weightDecay',
  'warmupSteps',
  'schedule',
  'labelSmoothing',
  'dropout',
  'maxLength',
  'evalEvery',
  'earlyStopping',
  'shuffle',
  'bucketByLength',
  'seed',
] as const satisfies readonly (keyof TrainOptions)[];

type ResumableOption = (typeof RESUMABLE_OPTIONS)[number];

/** Converts an option attribute name such as `keyRank` to its flag `--key-rank`. */
function flagOf(name: string): string {
  return `--${name.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)}`;
}

export function registerTrainCommand(program: Command): void {
  program
    .command('train')
    .description('train a tuning module (inducer, prefix or lora) on JSONL data and write the module folder with training_report.json')
    .requiredOption('--model <dir>', 'Hugging Face model folder (config.json, safetensors weights, tokenizer)', pathOption('--model'))
    .requiredOption('--data <file>', 'training data: JSONL lines {"prompt": ..., "completion": ...} or {"text": ...}', pathOption('--data'))
    .option('--eval <file>', 'evaluation data in the same format; the module with the lowest eval loss is written, and --early-stopping can end the run', pathOption('--eval'))
    .requiredOption('--out <dir>', 'module folder to create (it must not exist or be empty); checkpoints go to <out>-checkpoint while training runs', pathOption('--out'))
    .option('--method <name>', 'tuning method: inducer, prefix (prefix-tuning) or lora (LoRA on the query and value projections)', 'inducer')
    .option('--key-rank <n>', 'width of the inducer key MLP; 0 or 1 means no key MLP', integerOption('--key-rank', 0, 4096), 5)
    .option('--value-rank <n>', 'width of the inducer value MLP', integerOption('--value-rank', 1, 4096), 12)
    .option('--lora-q-rank <n>', 'rank of LoRA on the query projection (off when not given)', integerOption('--lora-q-rank', 1, 4096))
    .option('--lora-q-alpha <a>', 'LoRA scaling numerator; the scale is alpha / rank (default: 2 * rank)', numberOption('--lora-q-alpha', Number.MIN_VALUE, 1e6))
    .option('--prefix-length <n>', `--method prefix: virtual tokens per layer (default ${DEFAULT_PREFIX_LENGTH})`, integerOption('--prefix-length', 1, 4096))
    .option('--lora-rank <n>', `--method lora: rank of the query and value updates (default ${DEFAULT_LORA_RANK})`, integerOption('--lora-rank', 1, 4096))
    .option('--lora-alpha <a>', '--method lora: scaling numerator; the scale is alpha / rank (default: 2 * rank)', numberOption('--lora-alpha', Number.MIN_VALUE, 1e6))
    .option('--init <kind>', 'default (each method\'s own initialisation), zero-value (inducer only: starts equal to the frozen model) or a module folder to continue from', 'default')
    .option('--epochs <n>', `passes over the training data (default ${DEFAULT_EPOCHS} unless --max-steps is given)`, integerOption('--epochs', 1))
    .option('--max-steps <n>', 'optimizer steps to run, across epochs as needed', integerOption('--max-steps', 1))
    .option('--batch-size <n>', 'examples per optimizer step', integerOption('--batch-size', 1, 65536), 8)
    .option('--lr <x>', 'peak learning rate', numberOption('--lr', 0, 10), 1.25e-3)
    .option('--weight-decay <x>', 'decoupled AdamW weight decay', numberOption('--weight-decay', 0, 10), 0)
    .option('--warmup-steps <n>', `linear warm-up steps (default ${PAPER_WARMUP_STEPS}, at most 10% of all steps)`, integerOption('--warmup-steps', 0))
    .option('--schedule <kind>', `learning rate after warm-up: ${SCHEDULE_KINDS.join(', ')} (linear and cosine decay to 0)`, 'linear')
    .option('--label-smoothing <x>', 'label smoothing of the training loss in [0, 1)', numberOption('--label-smoothing', 0, 0.999), 0.1)
    .option('--dropout <x>', 'dropout probability on the inducer gate and the LoRA input (prefix modules have none), in [0, 1)', numberOption('--dropout', 0, 0.999), 0.1)
    .option('--max-length <n>', `maximum tokens per example (default: ${DEFAULT_MAX_LENGTH} or the model's context, whichever is smaller)`, integerOption('--max-length', 2))
    .option('--eval-every <n>', 'optimizer steps between evaluations and checkpoints (default: one epoch)', integerOption('--eval-every', 1))
    .option('--early-stopping <n>', 'stop after n evaluations without a lower eval loss (default: never)', integerOption('--early-stopping', 1))
    .option('--no-shuffle', 'keep the file order instead of shuffling every epoch')
    .option('--bucket-by-length', 'batch examples of similar length together to reduce padding')
    .option('--seed <s>', 'seed of the initialisation, shuffling and dropout', integerOption('--seed', 0), 0)
    .option('--resume <dir>', 'continue from a checkpoint folder that an interrupted run saved', pathOption('--resume'))
    .option('--log-jsonl <file>', 'write one JSON object {"step", "loss", "lr", "tokens"} per optimizer step to this file', pathOption('--log-jsonl'))
    .action(async (options: TrainOptions, command: Command) => {
      const explicit = new Set<string>();
      for (const name of RESUMABLE_OPTIONS) {
        if (command.getOptionValueSource(name) === 'cli') explicit.add(name);
      }
      try {
        await runTrainCommand(options, { explicitOptions: explicit, createSession: createTrainingSession });
      } catch (error) {
        if (!(error instanceof TrainingInterruptedError)) throw error;
        process.stderr.write(`${error.message}\n`);
        process.exitCode = 130; // the conventional status of a process ended by SIGINT
      }
    });
}

/** Creates the ONNX training session for the command. */
const createTrainingSession: SessionFactory = (config, weights, hp, options) => TrainingSession.create(config, weights, hp, options);

/** Settings of one {@link runTrainCommand} call: the options the user gave, the session factory and the output stream. */
export interface TrainContext {
  /** Attribute names (such as `keyRank`) of the options given on the command line, not defaulted. */
  readonly explicitOptions: ReadonlySet<string>;
  readonly createSession: SessionFactory;
  /** Aborting it interrupts training like Ctrl-C does; without it, SIGINT is handled. */
  readonly signal?: AbortSignal;
  /** Progress and messages (default process.stderr). */
  readonly stderr?: NodeJS.WritableStream;
  /** Draw a progress bar (default: when stderr is a terminal). */
  readonly interactive?: boolean;
}

/** A data file read, hashed and tokenized. */
interface LoadedData {
  readonly report: DataSetReport;
  readonly examples: TrainingExample[];
}

/** The settings a checkpoint stores and a resumed run must share. */
interface RunSettings {
  readonly options: Record<ResumableOption, unknown>;
  readonly hyper_params: MethodSettings;
  /** Task metadata (prompt template, stop strings) of the `--init` module, carried into the output. */
  readonly task: AdapterTask | null;
  readonly model_sha256: string;
  readonly train_sha256: string;
  readonly eval_sha256: string | null;
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | null)?.code;
}

/** Copies the options stored in a checkpoint into `options`; an explicitly given option must have the stored value. */
function applyResumedOptions(options: TrainOptions, stored: Record<string, unknown>, explicit: ReadonlySet<string>, resumeDir: string): void {
  const mutable = options as unknown as Record<string, unknown>; // keys are checked against RESUMABLE_OPTIONS
  for (const name of RESUMABLE_OPTIONS) {
    const storedValue = stored[name] ?? undefined;
    if (explicit.has(name) && mutable[name] !== storedValue) {
      throw new TrainCommandError(
        `${flagOf(name)} is ${JSON.stringify(mutable[name])} but the checkpoint ${resumeDir} was made with ${JSON.stringify(storedValue ?? null)}; ` +
          `leave ${flagOf(name)} out to continue with the checkpoint's value, or start a new run without --resume`,
      );
    }
    mutable[name] = storedValue;
  }
}

/** Checks option values and combinations that commander's parsers cannot check one by one. */
function validateOptions(options: TrainOptions, explicit: ReadonlySet<string>): void {
  if (!(METHODS as readonly string[]).includes(options.method)) {
    throw new TrainCommandError(`--method must be ${METHODS.join(', ')}, got "${options.method}"`);
  }
  const method = options.method as TuningMethod;
  for (const other of METHODS) {
    if (other === method) continue;
    for (const name of METHOD_OPTIONS[other]) {
      // Inducer ranks have defaults, so only an explicit one is a mistake; the others are undefined unless given.
      if (explicit.has(name) || (other !== 'inducer' && options[name] !== undefined)) {
        throw new TrainCommandError(`${flagOf(name)} applies to --method ${other}, not --method ${method}; leave it out or pass --method ${other}`);
      }
    }
  }
  if (options.init === 'zero-value' && method !== 'inducer') {
    throw new TrainCommandError(
      `--init zero-value applies to --method inducer only; ${method === 'lora' ? 'a fresh LoRA module already equals the frozen model' : 'prefix modules have one initialisation'}, so use --init default`,
    );
  }
  if (options.loraAlpha !== undefined && options.loraRank === undefined) {
    throw new TrainCommandError('--lora-alpha needs --lora-rank');
  }
  if (!SCHEDULE_KINDS.includes(options.schedule as ScheduleKind)) {
    throw new TrainCommandError(`--schedule must be one of ${SCHEDULE_KINDS.join(', ')}, got "${options.schedule}"`);
  }
  if (options.epochs !== undefined && options.maxSteps !== undefined) {
    throw new TrainCommandError('--epochs and --max-steps cannot be used together; give one of them');
  }
  if (options.earlyStopping !== undefined && options.eval === undefined) {
    throw new TrainCommandError('--early-stopping needs --eval: early stopping compares eval losses; pass an eval file or leave --early-stopping out');
  }
  if (options.loraQAlpha !== undefined && options.loraQRank === undefined) {
    throw new TrainCommandError('--lora-q-alpha needs --lora-q-rank');
  }
  if (options.init === '') throw new TrainCommandError('--init is empty; pass default, zero-value or a module folder');
  const isModuleInit = options.init !== 'default' && options.init !== 'zero-value';
  if (isModuleInit) {
    for (const name of ['keyRank', 'valueRank', 'loraQRank', 'loraQAlpha', 'prefixLength', 'loraRank', 'loraAlpha'] as const) {
      if (explicit.has(name)) {
        throw new TrainCommandError(`${flagOf(name)} cannot be combined with --init ${options.init}: the module folder fixes its ranks; leave ${flagOf(name)} out`);
      }
    }
  }
}

/** Checks that `outDir` does not exist or is an empty folder, and that its parent folder accepts new entries. */
async function checkOutputFolder(outDir: string): Promise<void> {
  try {
    const entries = await readdir(outDir);
    if (entries.length > 0) {
      throw new TrainCommandError(`--out ${outDir} already exists and is not empty; choose a new folder or remove this one`);
    }
  } catch (cause) {
    if (cause instanceof TrainCommandError) throw cause;
    const isFile = errorCode(cause) === 'ENOTDIR' && (await stat(outDir).then((stats) => stats.isFile(), () => false));
    if (isFile) throw new TrainCommandError(`--out ${outDir} is a file; choose a folder path`, { cause });
    // ENOTDIR for a path below a file falls through to the probe below, which names the parent.
    if (errorCode(cause) !== 'ENOENT' && errorCode(cause) !== 'ENOTDIR') throw new TrainCommandError(`cannot use --out ${outDir}: ${(cause as Error).message}`, { cause });
  }
  const parent = path.dirname(outDir);
  const probe = path.join(parent, `.${path.basename(outDir)}.probe-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await mkdir(parent, { recursive: true });
    await mkdir(probe);
    await rm(probe, { recursive: true, force: true });
  } catch (cause) {
    throw new TrainCommandError(
      `cannot write the module to --out ${outDir}: creating a folder in ${parent} failed (${(cause as Error).message}); choose a writable location`,
      { cause },
    );
  }
}

/** Rejects a checkpoint folder left by an interrupted run, which a new run would overwrite. */
async function checkNoStaleCheckpoint(checkpointDir: string): Promise<void> {
  const exists = await stat(checkpointDir).then(() => true, () => false);
  if (exists) {
    throw new TrainCommandError(
      `checkpoint folder ${checkpointDir} exists from an earlier, unfinished run; continue it with --resume ${checkpointDir}, ` +
        'or remove the folder to start over',
    );
  }
}

/** Reads, hashes and tokenizes one data file. */
async function loadData(
  file: string,
  tokenizer: Parameters<typeof tokenizeRecords>[1],
  maxLength: number,
): Promise<LoadedData> {
  const records = await readJsonlFile(file);
  const sha256 = createHash('sha256').update(await readFile(file)).digest('hex');
  const { examples, stats } = tokenizeRecords(records, tokenizer, { maxLength, source: file });
  return { report: { file: path.resolve(file), sha256, stats }, examples };
}

function describeStats(label: string, stats: TokenizationStats, maxLength: number): string[] {
  const lines = [
    `${label}: ${stats.numExamples} examples from ${stats.numRecords} records, ${stats.numTokens} tokens, ${stats.numTargetTokens} target tokens`,
  ];
  if (stats.numTruncated > 0) lines.push(`warning: ${label}: ${stats.numTruncated} example(s) truncated to --max-length ${maxLength}`);
  if (stats.numSkippedLongPrompt > 0) {
    lines.push(`warning: ${label}: ${stats.numSkippedLongPrompt} record(s) skipped because the prompt alone has ${maxLength} or more tokens`);
  }
  if (stats.numSkippedNoTarget > 0) lines.push(`warning: ${label}: ${stats.numSkippedNoTarget} record(s) skipped because they have no target token`);
  return lines;
}

/**
 * Returns the hyper-parameters, starting tensors and task metadata of a new run: a fresh module,
 * or a copy of the `--init` module.
 */
async function initialModule(
  options: TrainOptions,
  checkpoint: Checkpoint,
  fingerprint: BaseModelFingerprint,
): Promise<{ hp: MethodSettings; params: Map<string, HostTensor>; task: AdapterTask | null }> {
  if (options.init === 'default' || options.init === 'zero-value') {
    const hp = settingsFromOptions(options);
    return { hp, params: initModuleTensors(checkpoint.config, hp, options.init, options.seed), task: null };
  }
  const module = await readModule(options.init, { model: checkpoint.config, fingerprint }).catch((cause: unknown) => {
    throw new TrainCommandError(`--init ${options.init}: ${(cause as Error).message}`, { cause });
  });
  if (module.config.method !== options.method) {
    throw new TrainCommandError(
      `--init ${options.init} is a ${module.config.method} module but --method is ${options.method}; pass --method ${module.config.method} to continue training it`,
    );
  }
  const params = new Map<string, HostTensor>();
  for (const [name, tensor] of module.tensors) params.set(name, { dtype: 'float32', shape: [...tensor.shape], data: tensor.data.slice() });
  return { hp: hyperParamsOf(module.config), params, task: module.config.task ?? null };
}

/** Returns the settings of a fresh module from the method's options and their defaults. */
function settingsFromOptions(options: TrainOptions): MethodSettings {
  if (options.method === 'prefix') return { method: 'prefix', prefixLength: options.prefixLength ?? DEFAULT_PREFIX_LENGTH };
  if (options.method === 'lora') {
    const rank = options.loraRank ?? DEFAULT_LORA_RANK;
    return { method: 'lora', rank, alpha: options.loraAlpha ?? 2 * rank };
  }
  const loraQ =
    options.loraQRank === undefined ? null : { rank: options.loraQRank, alpha: options.loraQAlpha ?? 2 * options.loraQRank, bias: true };
  return { keyRank: options.keyRank, valueRank: options.valueRank, loraQ };
}

/** Opens the per-step log: appended to on resume, replaced otherwise. */
async function openStepLog(file: string | undefined, append: boolean): Promise<FileHandle | null> {
  if (file === undefined) return null;
  try {
    return await open(file, append ? 'a' : 'w');
  } catch (cause) {
    throw new TrainCommandError(`cannot open --log-jsonl ${file} for writing: ${(cause as Error).message}`, { cause });
  }
}

/**
 * Writes the module and its report into a hidden sibling of `outDir`, then renames it to
 * `outDir`. On failure the sibling is removed, so `outDir` either contains the whole module or
 * does not exist (or stays empty).
 */
async function publishModule(outDir: string, write: (staging: string) => Promise<void>): Promise<void> {
  const staging = path.join(path.dirname(outDir), `.${path.basename(outDir)}.train-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await write(staging);
    // checkOutputFolder allowed only an empty folder here; rmdir fails if files appeared since.
    const exists = await stat(outDir).then(() => true, () => false);
    if (exists) await rmdir(outDir);
    await rename(staging, outDir);
  } catch (cause) {
    await rm(staging, { recursive: true, force: true }).catch(() => undefined);
    throw new TrainCommandError(`failed to write the module to ${outDir}: ${(cause as Error).message}; check that the folder is writable`, { cause });
  }
}

/**
 * Runs `inducer train` with parsed options. It checks the options and `--out`, loads the model,
 * tokenizer and data, and creates the starting module (or loads the `--init` module or the
 * `--resume` checkpoint). Then it runs the training loop with progress output, checkpoints and
 * the per-step log, writes the module folder with `training_report.json` and removes the
 * checkpoint. Returns the report.
 *
 * Throws {@link TrainCommandError}, `DataError`, `AdapterError` and loader errors with messages
 * for the user, and `TrainingInterruptedError` after saving a checkpoint when interrupted.
 */
export async function runTrainCommand(options: TrainOptions, context: TrainContext): Promise<ReturnType<typeof buildTrainingReport>> {
  const startedAt = performance.now();
  const stderr = context.stderr ?? process.stderr;
  const say = (text: string): void => void stderr.write(`${text}\n`);

  let resume: TrainingCheckpoint | undefined;
  let storedSettings: RunSettings | undefined;
  if (options.resume !== undefined) {
    resume = await readCheckpoint(options.resume).catch((cause: unknown) => {
      throw new TrainCommandError(`--resume ${options.resume}: ${(cause as Error).message}`, { cause });
    });
    storedSettings = resume.settings as unknown as RunSettings; // written by this command from a RunSettings
    applyResumedOptions(options, storedSettings.options, context.explicitOptions, options.resume);
  }
  validateOptions(options, resume === undefined ? context.explicitOptions : new Set());

  const outDir = path.resolve(options.out);
  await checkOutputFolder(outDir);
  const checkpointDir = options.resume !== undefined ? path.resolve(options.resume) : `${outDir}-checkpoint`;
  if (resume === undefined) await checkNoStaleCheckpoint(checkpointDir);

  const checkpoint = await loadCheckpoint(options.model);
  const config = checkpoint.config;
  const [tokenizer, fingerprint] = await Promise.all([loadTokenizer(options.model, config), fingerprintModel(config, checkpoint.weightFiles)]);
  if (options.maxLength !== undefined && options.maxLength > config.maxPositions) {
    throw new TrainCommandError(`--max-length ${options.maxLength} exceeds the model's context of ${config.maxPositions} tokens; pass at most ${config.maxPositions}`);
  }
  const maxLength = options.maxLength ?? Math.min(DEFAULT_MAX_LENGTH, config.maxPositions);
  const train = await loadData(options.data, tokenizer, maxLength);
  const evalData = options.eval === undefined ? null : await loadData(options.eval, tokenizer, maxLength);
  for (const line of describeStats('train', train.report.stats, maxLength)) say(line);
  if (evalData !== null) for (const line of describeStats('eval', evalData.report.stats, maxLength)) say(line);

  let hp: MethodSettings;
  let params: Map<string, HostTensor>;
  let task: AdapterTask | null;
  if (resume !== undefined && storedSettings !== undefined) {
    checkResumedData(storedSettings, fingerprint, train.report, evalData?.report ?? null, options.resume as string);
    hp = storedSettings.hyper_params;
    task = storedSettings.task ?? null;
    params = new Map([...resume.params].map(([name, tensor]) => [name, { dtype: 'float32', shape: [...tensor.shape], data: tensor.data.slice() }]));
  } else {
    ({ hp, params, task } = await initialModule(options, checkpoint, fingerprint));
  }

  const stepsPerEpoch = batchesPerEpoch(train.examples.length, options.batchSize);
  const totalSteps = options.maxSteps ?? stepsPerEpoch * (options.epochs ?? DEFAULT_EPOCHS);
  const warmupSteps = options.warmupSteps ?? Math.min(PAPER_WARMUP_STEPS, Math.floor(MAX_DEFAULT_WARMUP_FRACTION * totalSteps));
  if (warmupSteps >= totalSteps) {
    // Warm-up ramps the rate from 0, so a run no longer than its warm-up never reaches --lr.
    throw new TrainCommandError(
      `--warmup-steps ${warmupSteps} is not below the run's ${totalSteps} optimizer steps, so the learning rate would never reach --lr ${options.lr}; ` +
        `pass --warmup-steps below ${totalSteps} (0 for none) or train for more steps`,
    );
  }
  const settings: LoopSettings = {
    batchSize: options.batchSize,
    shuffle: options.shuffle,
    bucketByLength: options.bucketByLength === true,
    seed: options.seed,
    totalSteps,
    schedule: options.schedule as ScheduleKind,
    learningRate: options.lr,
    warmupSteps,
    adamw: { ...DEFAULT_ADAMW, weightDecay: options.weightDecay },
    maxGradNorm: MAX_GRAD_NORM,
    evalEvery: options.evalEvery ?? stepsPerEpoch,
    earlyStoppingPatience: options.earlyStopping ?? null,
  };
  const runSettings: RunSettings = {
    options: Object.fromEntries(RESUMABLE_OPTIONS.map((name) => [name, options[name] ?? null])) as Record<ResumableOption, unknown>,
    hyper_params: hp,
    task,
    model_sha256: fingerprint.weights_sha256,
    train_sha256: train.report.sha256,
    eval_sha256: evalData?.report.sha256 ?? null,
  };

  say(
    `training ${params.size} tensors for ${totalSteps} steps (${stepsPerEpoch} per epoch), batch ${options.batchSize}, ` +
      `lr ${options.lr} with ${warmupSteps} warm-up steps (${options.schedule})`,
  );
  const resumedFromStep = resume?.loop.step ?? 0;
  const result = await trainWithSession(options, context, {
    config,
    weights: checkpoint.weights,
    hp,
    params,
    train: train.examples,
    eval: evalData?.examples ?? null,
    padId: tokenizer.eosTokenIds[0] ?? 0,
    settings,
    runSettings,
    resume,
    checkpointDir,
  });

  const report = buildTrainingReport({
    model: { dir: checkpoint.dir, modelType: config.modelType, weightsSha256: fingerprint.weights_sha256 },
    hyperParameters: hyperParameterSummary(options, hp, settings, maxLength),
    train: train.report,
    eval: evalData?.report ?? null,
    state: result.state,
    totalSteps,
    stepsPerEpoch,
    stoppedEarly: result.stoppedEarly,
    selectedStep: result.selectedStep,
    wallSeconds: (performance.now() - startedAt) / 1000,
    resumedFromStep,
  });
  // The draft supplies a validated config; its freshly drawn tensors are replaced by the trained ones.
  const draft = createModule(config, fingerprint, hp, { init: 'default', seed: options.seed, ...(task === null ? {} : { task }) });
  const module = createTuningModule({ ...draft.config, training: summarizeTraining(report) }, result.selectedParams);
  await publishModule(outDir, async (staging) => {
    await writeModule(staging, module);
    await writeFile(path.join(staging, REPORT_FILE), `${JSON.stringify(report, null, 2)}\n`);
  });
  await rm(checkpointDir, { recursive: true, force: true });

  const finalEval = report.final_eval;
  say(
    `wrote ${outDir}: ${result.state.step} steps in ${formatDuration(report.wall_seconds)}, ${Math.round(report.tokens_per_second)} tokens/s` +
      (finalEval === null ? '' : `, eval loss ${report.initial_eval?.loss.toFixed(4) ?? '?'} -> ${report.best_eval?.loss.toFixed(4)} (module from step ${result.selectedStep})`),
  );
  return report;
}

/** Inputs of {@link trainWithSession} that {@link runTrainCommand} has prepared. */
interface PreparedRun {
  readonly config: ModelConfig;
  readonly weights: ReadonlyMap<string, HostTensor>;
  readonly hp: MethodSettings;
  readonly params: Map<string, HostTensor>;
  readonly train: readonly TrainingExample[];
  readonly eval: readonly TrainingExample[] | null;
  readonly padId: number;
  readonly settings: LoopSettings;
  readonly runSettings: RunSettings;
  readonly resume: TrainingCheckpoint | undefined;
  readonly checkpointDir: string;
}

/**
 * Creates the training session and runs the loop with progress output, the per-step log,
 * checkpoints in `run.checkpointDir` and Ctrl-C handling. Disposes of the session at the end.
 */
async function trainWithSession(options: TrainOptions, context: TrainContext, run: PreparedRun): Promise<LoopResult> {
  const stderr = context.stderr ?? process.stderr;
  const stepLog = await openStepLog(options.logJsonl, run.resume !== undefined);
  let session: DisposableSession;
  try {
    session = await context.createSession(run.config, run.weights, run.hp, { labelSmoothing: options.labelSmoothing, dropout: options.dropout });
  } catch (error) {
    await stepLog?.close();
    throw error;
  }
  const progress = createProgressReporter({ stream: stderr, interactive: context.interactive });
  const interruption = context.signal === undefined ? listenForInterrupt(progress) : null;
  try {
    progress.start(run.settings.totalSteps, run.resume?.loop.step ?? 0);
    return await runTrainingLoop({
      session,
      params: run.params,
      trainExamples: run.train,
      evalExamples: run.eval,
      padId: run.padId,
      settings: run.settings,
      checkpointSettings: run.runSettings as unknown as Record<string, unknown>, // plain JSON values
      resume: run.resume,
      saveCheckpoint: (state) => writeCheckpoint(run.checkpointDir, state),
      signal: context.signal ?? interruption?.signal,
      onStep: async (report) => {
        progress.step(report);
        if (stepLog !== null) {
          await stepLog.write(`${JSON.stringify({ step: report.step, loss: report.loss, lr: report.learningRate, tokens: report.tokens })}\n`);
        }
      },
      onEval: (point, isBest) => {
        progress.message(`eval at step ${point.step}: loss ${point.loss.toFixed(4)}, perplexity ${point.perplexity.toFixed(3)}${isBest ? ' (best so far)' : ''}`);
      },
    });
  } catch (error) {
    if (error instanceof TrainingInterruptedError && error.checkpointSaved) {
      throw new TrainingInterruptedError(
        `${error.message}; checkpoint saved to ${run.checkpointDir}. Continue with the same command and --resume ${run.checkpointDir}`,
        error.step,
        true,
      );
    }
    throw error;
  } finally {
    progress.stop();
    interruption?.dispose();
    await stepLog?.close();
    await session.dispose();
  }
}

/** Rejects a resume whose model or data files differ from the checkpoint's. */
function checkResumedData(
  stored: RunSettings,
  fingerprint: BaseModelFingerprint,
  train: DataSetReport,
  evalReport: DataSetReport | null,
  resumeDir: string,
): void {
  const mismatch = (what: string): TrainCommandError =>
    new TrainCommandError(`${what} differs from the one the checkpoint ${resumeDir} was made with; resume with the same --model, --data and --eval`);
  if (stored.model_sha256 !== fingerprint.weights_sha256) throw mismatch('the model (weights hash)');
  if (stored.train_sha256 !== train.sha256) throw mismatch(`the training data ${train.file}`);
  if (stored.eval_sha256 !== (evalReport?.sha256 ?? null)) throw mismatch('the eval data');
}

/** Hyper-parameters as the report lists them. */
function hyperParameterSummary(options: TrainOptions, hp: MethodSettings, settings: LoopSettings, maxLength: number): Record<string, unknown> {
  return {
    method: methodOf(hp),
    ...methodSummary(hp),
    init: options.init,
    batch_size: settings.batchSize,
    learning_rate: settings.learningRate,
    schedule: settings.schedule,
    warmup_steps: settings.warmupSteps,
    total_steps: settings.totalSteps,
    epochs: options.epochs ?? null,
    max_steps: options.maxSteps ?? null,
    adamw: { beta1: settings.adamw.beta1, beta2: settings.adamw.beta2, epsilon: settings.adamw.epsilon, weight_decay: settings.adamw.weightDecay },
    max_grad_norm: settings.maxGradNorm,
    label_smoothing: options.labelSmoothing,
    dropout: options.dropout,
    max_length: maxLength,
    eval_every: settings.evalEvery,
    early_stopping: settings.earlyStoppingPatience,
    shuffle: settings.shuffle,
    bucket_by_length: settings.bucketByLength,
    seed: settings.seed,
  };
}

/** The method's hyper-parameters as the report lists them. */
function methodSummary(hp: MethodSettings): Record<string, unknown> {
  if (hp.method === 'prefix') return { prefix_length: hp.prefixLength };
  if (hp.method === 'lora') return { lora_rank: hp.rank, lora_alpha: hp.alpha, target_modules: ['q', 'v'] };
  return { key_rank: hp.keyRank, value_rank: hp.valueRank, lora_q: hp.loraQ };
}

/**
 * Turns the first Ctrl-C into a request to stop after the current step, after which the loop
 * saves a checkpoint. A second Ctrl-C exits at once with status 130.
 */
function listenForInterrupt(progress: ProgressReporter): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const onSignal = (): void => {
    if (controller.signal.aborted) process.exit(130);
    progress.message('interrupt received: stopping after the current step and saving a checkpoint (press Ctrl-C again to quit without saving)');
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  return { signal: controller.signal, dispose: () => void process.off('SIGINT', onSignal) };
}
