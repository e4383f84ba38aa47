/**
 * `inducer push`.
 * @module
 */
import type { Command } from 'commander';

// TODO: not implemented yet; this registers no command.
export function registerPushCommand(program: Command): void {
  void program;
}
