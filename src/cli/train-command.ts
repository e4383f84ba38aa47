/**
 * `inducer train`.
 * @module
 */
import type { Command } from 'commander';

// TODO: not implemented yet; this registers no command.
export function registerTrainCommand(program: Command): void {
  void program;
}
