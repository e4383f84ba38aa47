/**
 * `inducer models pull`: download a model repository from the Hugging Face Hub.
 * @module
 */
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { DEFAULT_REVISION, pullModel, type PullEvent } from '../model/hub.js';
import { pathOption } from './options.js';

interface PullCommandOptions {
  revision: string;
  modelsDir?: string;
}

export function registerModelsCommands(program: Command): void {
  const models = program.command('models').description('manage local copies of Hugging Face models');
  models
    .command('pull')
    .description(
      'download config.json, the safetensors weights and the tokenizer files of a Hugging Face Hub repository into <models-dir>/<repo-id>/ ' +
        'and print that folder; resumes interrupted downloads and skips complete files. ' +
        'Reads HF_TOKEN (access token for private or gated repositories) and HF_ENDPOINT (hub URL)',
    )
    .argument('<repo-id>', 'repository id, for example openai-community/gpt2')
    .option('--revision <revision>', 'branch, tag or commit to download', DEFAULT_REVISION)
    .option('--models-dir <dir>', 'folder that contains the downloaded models (default: $INDUCER_MODELS_DIR, else ./models)', pathOption('--models-dir'))
    .action(async (repoId: string, options: PullCommandOptions) => {
      const reporter = process.stderr.isTTY ? new BarReporter() : new LineReporter();
      try {
        const result = await pullModel(repoId, {
          revision: options.revision,
          modelsDir: options.modelsDir,
          onProgress: (event) => reporter.handle(event),
        });
        reporter.stop();
        const downloaded = result.files.filter((file) => !file.skipped).length;
        const commit = result.commit === null ? '' : ` at commit ${result.commit.slice(0, 12)}`;
        process.stderr.write(`${repoId}${commit}: ${downloaded} files downloaded, ${result.files.length - downloaded} already complete\n`);
        process.stdout.write(`${result.dir}\n`);
      } finally {
        reporter.stop();
      }
    });
}

interface ProgressReporter {
  handle(event: PullEvent): void;
  stop(): void;
}

/** Prints one line per file event, for logs and pipes. */
class LineReporter implements ProgressReporter {
  handle(event: PullEvent): void {
    const line = describeEvent(event);
    if (line !== null) process.stderr.write(`${line}\n`);
  }

  stop(): void {}
}

/** Draws one progress bar for the file being downloaded, on a terminal. */
class BarReporter implements ProgressReporter {
  private bar: cliProgress.SingleBar | null = null;

  handle(event: PullEvent): void {
    if (event.type === 'file-start' && event.sizeBytes !== null) {
      this.stop();
      this.bar = new cliProgress.SingleBar(
        {
          format: `${event.file} [{bar}] {percentage}% | {received} of {size} | ETA {eta_formatted}`,
          hideCursor: true,
          clearOnComplete: false,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(event.sizeBytes, event.offsetBytes, { received: formatBytes(event.offsetBytes), size: formatBytes(event.sizeBytes) });
      return;
    }
    if (event.type === 'file-progress' && this.bar !== null) {
      this.bar.update(event.receivedBytes, { received: formatBytes(event.receivedBytes) });
      return;
    }
    if (event.type === 'file-done' && !event.skipped && this.bar !== null) {
      this.stop();
      return;
    }
    if (event.type === 'file-progress') return;
    this.stop();
    const line = describeEvent(event);
    if (line !== null) process.stderr.write(`${line}\n`);
  }

  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}

/** Returns the log line of an event, or null for events that only move a progress bar. */
function describeEvent(event: PullEvent): string | null {
  switch (event.type) {
    case 'listing':
      return event.source === 'probe' ? `note: ${event.reason ?? 'no file list'}; probing known file names` : null;
    case 'file-start': {
      const size = event.sizeBytes === null ? 'unknown size' : formatBytes(event.sizeBytes);
      return event.offsetBytes > 0 ? `${event.file}: resuming at ${formatBytes(event.offsetBytes)} of ${size}` : `${event.file}: downloading ${size}`;
    }
    case 'file-progress':
      return null;
    case 'file-done':
      return event.skipped ? `${event.file}: already complete (${formatBytes(event.sizeBytes)})` : `${event.file}: done (${formatBytes(event.sizeBytes)})`;
    case 'retry':
      return `${event.file}: ${event.error.message}; retry ${event.attempt} of ${event.maxRetries} in ${(event.delayMs / 1000).toFixed(1)} s`;
    case 'file-removed':
      return `${event.file}: removed, because this revision no longer has it`;
  }
}

function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}
