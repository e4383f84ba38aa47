/**
 * Warnings the commands print to stderr.
 * @module
 */

/** Warns when the checkpoint contains tensors the model does not use, which often means config.json does not match the weights. */
export function warnAboutIgnoredTensors(names: readonly string[]): void {
  if (names.length === 0) return;
  const listed = names.slice(0, 5).join(', ');
  const more = names.length > 5 ? ` and ${names.length - 5} more` : '';
  process.stderr.write(
    `warning: the checkpoint has ${names.length} tensors that the model does not use (${listed}${more}); check that config.json matches the weights\n`,
  );
}
