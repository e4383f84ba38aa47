/**
 * `inducer serve`.
 * @module
 */
import type { Command } from 'commander';

// TODO: not implemented yet; this registers no command.
export function registerServeCommands(program: Command): void {
  void program;
}
