#!/usr/bin/env node
/**
 * The `inducer` command line.
 * @module
 */
import { Command, CommanderError } from 'commander';
import { registerAdapterCommands } from './cli/adapter-command.js';
import { registerGenerateCommands } from './cli/generate-command.js';
import { registerModelsCommands } from './cli/models-command.js';
import { registerPushCommand } from './cli/push-command.js';
import { registerServeCommands } from './cli/serve-command.js';
import { registerTrainCommand } from './cli/train-command.js';

// A closed pipe (`inducer generate ... | head`) ends the command quietly; other write errors get one line.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') process.stderr.write(`error: cannot write the output: ${error.message}\n`);
  process.exit(error.code === 'EPIPE' ? 0 : 1);
});

const program = new Command('inducer')
  .description('run a frozen language model with inducer-tuning modules')
  .showHelpAfterError('(add --help for usage)')
  .exitOverride();

registerServeCommands(program);
registerGenerateCommands(program);
registerTrainCommand(program);
registerAdapterCommands(program);
registerPushCommand(program);
registerModelsCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    process.exitCode = error.exitCode;
  } else {
    process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  }
}
