#!/usr/bin/env node
/**
 * The `inducer` command line.
 * @module
 */
import { Command, CommanderError } from 'commander';
import { registerAdapterCommands } from './cli/adapter-command.js';
import { registerGenerateCommands } from './cli/generate-command.js';

const program = new Command('inducer')
  .description('serve and train inducer-tuning modules on one frozen language model')
  .showHelpAfterError()
  .exitOverride();

registerGenerateCommands(program);
registerAdapterCommands(program);

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
