/**
 * Progress output of `inducer train` on stderr: a cli-progress bar (steps, loss, tokens/s, ETA)
 * when stderr is a terminal, plain log lines otherwise so that redirected output stays readable.
 * @module
 */
import { MultiBar, Presets, type SingleBar } from 'cli-progress';
import type { StepReport } from './loop.js';

/** Receives the loop's progress and other messages while training runs. */
export interface ProgressReporter {
  /** Starts showing progress for a run of `totalSteps` steps, `startStep` of them already done. */
  start(totalSteps: number, startStep: number): void;
  step(report: StepReport): void;
  /** Prints one line of text without breaking the bar. */
  message(text: string): void;
  /** Removes the bar; later output goes to the stream directly. */
  stop(): void;
}

/** Options of {@link createProgressReporter}. */
export interface ProgressOptions {
  /** Output stream (default process.stderr). */
  readonly stream?: NodeJS.WriteStream | NodeJS.WritableStream;
  /** Whether to draw a bar (default: whether the stream is a terminal). */
  readonly interactive?: boolean;
  /** Without a bar: print a step line every this many steps (default: about 20 lines per run). */
  readonly logEvery?: number;
}

/** Formats a duration in seconds as `1h02m`, `3m05s` or `42s`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const total = Math.round(seconds);
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const rest = total % 60;
  if (hours > 0) return `${hours}h${String(minutes).padStart(2, '0')}m`;
  if (minutes > 0) return `${minutes}m${String(rest).padStart(2, '0')}s`;
  return `${rest}s`;
}

/** Formats one plain progress line for a step. */
export function formatStepLine(report: StepReport, elapsedSeconds: number, stepsThisRun: number): string {
  const secondsPerStep = stepsThisRun > 0 ? elapsedSeconds / stepsThisRun : 0;
  const eta = formatDuration(secondsPerStep * (report.totalSteps - report.step));
  return (
    `step ${report.step}/${report.totalSteps} epoch ${report.epoch + 1} loss ${report.loss.toFixed(4)} ` +
    `lr ${report.learningRate.toExponential(3)} grad-norm ${report.gradientNorm.toFixed(3)} ` +
    `${Math.round(report.tokensPerSecond)} tokens/s eta ${eta}`
  );
}

class BarReporter implements ProgressReporter {
  private readonly bars: MultiBar;
  private bar: SingleBar | null = null;

  constructor(stream: NodeJS.WritableStream) {
    this.bars = new MultiBar(
      {
        stream,
        format: 'train |{bar}| {value}/{total} steps | loss {loss} | {tokensPerSecond} tokens/s | ETA {eta_formatted}',
        hideCursor: true,
        clearOnComplete: false,
        etaBuffer: 50,
      },
      Presets.shades_classic,
    );
  }

  start(totalSteps: number, startStep: number): void {
    this.bar = this.bars.create(totalSteps, startStep, { loss: '-', tokensPerSecond: '-' });
  }

  step(report: StepReport): void {
    this.bar?.update(report.step, { loss: report.loss.toFixed(4), tokensPerSecond: String(Math.round(report.tokensPerSecond)) });
  }

  message(text: string): void {
    this.bars.log(`${text}\n`);
  }

  stop(): void {
    this.bars.stop();
  }
}

class LineReporter implements ProgressReporter {
  private startedAt = 0;
  private startStep = 0;
  private logEvery = 1;

  constructor(
    private readonly stream: NodeJS.WritableStream,
    private readonly requestedLogEvery: number | undefined,
  ) {}

  start(totalSteps: number, startStep: number): void {
    this.startedAt = performance.now();
    this.startStep = startStep;
    this.logEvery = this.requestedLogEvery ?? Math.max(1, Math.round(totalSteps / 20));
  }

  step(report: StepReport): void {
    if (report.step % this.logEvery !== 0 && report.step !== report.totalSteps) return;
    const elapsedSeconds = (performance.now() - this.startedAt) / 1000;
    this.stream.write(`${formatStepLine(report, elapsedSeconds, report.step - this.startStep)}\n`);
  }

  message(text: string): void {
    this.stream.write(`${text}\n`);
  }

  stop(): void {}
}

/** Creates a progress reporter: a bar on a terminal, plain lines otherwise. */
export function createProgressReporter(options: ProgressOptions = {}): ProgressReporter {
  const stream = options.stream ?? process.stderr;
  const interactive = options.interactive ?? (stream as NodeJS.WriteStream).isTTY === true;
  return interactive ? new BarReporter(stream) : new LineReporter(stream, options.logEvery);
}
