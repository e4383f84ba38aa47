/**
 * `inducer adapter init`: write a freshly initialised inducer-tuning module for a model.
 * @module
 */
import type { Command } from 'commander';
import { writeModule } from '../adapters/module-files.js';
import { createInducerModule } from '../adapters/module.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { fingerprintModel } from '../model/fingerprint.js';
import { stat } from 'node:fs/promises';
import { integerOption, numberOption, pathOption } from './options.js';

interface InitOptions {
  model: string;
  out: string;
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
  const adapter = program.command('adapter').description('create and inspect inducer-tuning modules');
  adapter
    .command('init')
    .description('write a freshly initialised inducer-tuning module for a model')
    .requiredOption('--model <dir>', 'Hugging Face model folder the module is for', pathOption('--model'))
    .requiredOption('--out <dir>', 'module folder to write', pathOption('--out'))
    .option('--force', 'replace an existing module folder at --out (the whole folder is replaced)')
    .option('--key-rank <n>', 'width of the inducer key MLP; 0 or 1 means no key MLP', integerOption('--key-rank', 0, 4096), 5)
    .option('--value-rank <n>', 'width of the inducer value MLP', integerOption('--value-rank', 1, 4096), 12)
    .option('--lora-q-rank <n>', 'rank of LoRA on the query projection (off when not given)', integerOption('--lora-q-rank', 1, 4096))
    .option('--lora-q-alpha <a>', 'LoRA scaling numerator; the scale is alpha / rank (default: 2 * rank)', numberOption('--lora-q-alpha', Number.MIN_VALUE, 1e6))
    .option('--no-lora-q-bias', 'leave out the LoRA-Q bias vector')
    .option('--seed <s>', 'random seed of the initialisation', integerOption('--seed', 0), 0)
    .option('--init <kind>', 'default (official code) or zero-value (value path zero: equals the frozen model)', 'default')
    .action(async (options: InitOptions) => {
      if (options.init !== 'default' && options.init !== 'zero-value') {
        throw new Error(`--init must be "default" or "zero-value", got "${options.init}"`);
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
      const module = createInducerModule(checkpoint.config, fingerprint, { keyRank: options.keyRank, valueRank: options.valueRank, loraQ }, {
        init: options.init,
        seed: options.seed,
      });
      await writeModule(options.out, module);
      process.stderr.write(`wrote ${options.out}: ${module.tensors.size} tensors, ${module.sizeBytes} bytes\n`);
    });
}
