/**
 * `inducer adapter init`: write a freshly initialised tuning module (inducer, prefix or lora) for a model.
 * @module
 */
import type { Command } from 'commander';
import { writeModule } from '../adapters/module-files.js';
import { createModule } from '../adapters/module.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { fingerprintModel } from '../model/fingerprint.js';
import { stat } from 'node:fs/promises';
import type { MethodSettings } from '../tuning/method.js';
import { integerOption, numberOption, pathOption } from './options.js';

interface InitOptions {
  model: string;
  out: string;
  method: string;
  prefixLength: number;
  loraRank: number;
  loraAlpha?: number;
  keyRank: number;
  valueRank: number;
  loraQRank?: number;
  loraQAlpha?: number;
  loraQBias?: boolean;
  seed: number;
  init: string;
  force?: boolean;
}

export function registerAdapterCommands(program: Command): void {
  const adapter = program.command('adapter').description('create tuning modules');
  adapter
    .command('init')
    .description('write a freshly initialised tuning module (inducer, prefix or lora) for a model')
    .requiredOption('--model <dir>', 'Hugging Face model folder the module is for', pathOption('--model'))
    .requiredOption('--out <dir>', 'module folder to write', pathOption('--out'))
    .option('--force', 'replace an existing module folder at --out (the whole folder is replaced)')
    .option('--method <name>', 'tuning method: inducer, prefix (prefix-tuning) or lora (LoRA on the query and value projections)', 'inducer')
    .option('--prefix-length <n>', '--method prefix: virtual tokens per layer', integerOption('--prefix-length', 1, 4096), 10)
    .option('--lora-rank <n>', '--method lora: rank of the query and value updates', integerOption('--lora-rank', 1, 4096), 8)
    .option('--lora-alpha <a>', '--method lora: scaling numerator; the scale is alpha / rank (default: 2 * rank)', numberOption('--lora-alpha', Number.MIN_VALUE, 1e6))
    .option('--key-rank <n>', 'width of the inducer key MLP; 0 or 1 means no key MLP', integerOption('--key-rank', 0, 4096), 5)
    .option('--value-rank <n>', 'width of the inducer value MLP', integerOption('--value-rank', 1, 4096), 12)
    .option('--lora-q-rank <n>', 'rank of LoRA on the query projection (off when not given)', integerOption('--lora-q-rank', 1, 4096))
    .option('--lora-q-alpha <a>', 'LoRA scaling numerator; the scale is alpha / rank (default: 2 * rank)', numberOption('--lora-q-alpha', Number.MIN_VALUE, 1e6))
    .option('--no-lora-q-bias', 'leave out the LoRA-Q bias vector')
    .option('--seed <s>', 'random seed of the initialisation', integerOption('--seed', 0), 0)
    .option('--init <kind>', 'default (each method\'s own initialisation) or zero-value (inducer only: value path zero, equals the frozen model)', 'default')
    .action(async (options: InitOptions) => {
      if (options.init !== 'default' && options.init !== 'zero-value') {
        throw new Error(`--init must be "default" or "zero-value", got "${options.init}"`);
      }
      if (options.method !== 'inducer' && options.method !== 'prefix' && options.method !== 'lora') {
        throw new Error(`--method must be inducer, prefix or lora, got "${options.method}"`);
      }
      if (options.method !== 'inducer' && options.init !== 'default') {
        throw new Error(`--init ${options.init} applies to --method inducer only; use --init default`);
      }
      if (options.loraQAlpha !== undefined && options.loraQRank === undefined) {
        throw new Error('--lora-q-alpha needs --lora-q-rank');
      }
      if (options.loraQBias === false && options.loraQRank === undefined) {
        throw new Error('--no-lora-q-bias needs --lora-q-rank');
      }
      const exists = await stat(options.out).then(() => true, () => false);
      if (exists && !options.force) {
        throw new Error(`${options.out} already exists; pass --force to replace it (every file in that folder is removed), or choose another --out`);
      }
      const checkpoint = await loadCheckpoint(options.model);
      const fingerprint = await fingerprintModel(checkpoint.config, checkpoint.weightFiles);
      const loraQ =
        options.loraQRank === undefined
          ? null
          : { rank: options.loraQRank, alpha: options.loraQAlpha ?? 2 * options.loraQRank, bias: options.loraQBias !== false };
      let settings: MethodSettings = { keyRank: options.keyRank, valueRank: options.valueRank, loraQ };
      if (options.method === 'prefix') settings = { method: 'prefix', prefixLength: options.prefixLength };
      if (options.method === 'lora') settings = { method: 'lora', rank: options.loraRank, alpha: options.loraAlpha ?? 2 * options.loraRank };
      const module = createModule(checkpoint.config, fingerprint, settings, { init: options.init, seed: options.seed });
      await writeModule(options.out, module);
      process.stderr.write(`wrote ${options.out}: ${module.tensors.size} tensors, ${module.sizeBytes} bytes\n`);
    });
}
