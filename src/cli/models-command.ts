/**
 * `inducer models`.
 * @module
 */
import type { Command } from 'commander';

// TODO: not implemented yet; this registers no command.
export function registerModelsCommands(program: Command): void {
  void program;
}
