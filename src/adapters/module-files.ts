/**
 * Module folders on disk: `adapter_config.json` plus `adapter_model.safetensors` (F32 or F16
 * tensors), read with validation and written atomically.
 * @module
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { ModelConfig } from '../model/config.js';
import type { BaseModelFingerprint } from '../model/fingerprint.js';
import { parseSafetensors, readSafetensorsHeader, SafetensorsError, serializeSafetensors } from '../model/safetensors.js';
import type { HostTensor } from '../model/tensor.js';
import { inducerTensorShapes } from '../tuning/inducer.js';
import { syncFolder, writeFileSynced } from '../util/durable-files.js';
import { parseAdapterConfig } from './adapter-config.js';
import {
  AdapterError,
  baseModelDimsOf,
  checkBaseModel,
  createTuningModule,
  hyperParamsOf,
  validateModuleTensors,
  type TuningModule,
} from './module.js';

/** Name of the metadata file inside a module folder. */
export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
/** Name of the tensor file inside a module folder. */
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';

/** Largest finite float16 value; larger magnitudes would be stored as infinity. */
const FLOAT16_MAX = 65504;

const FOLDER_CONTENTS = `a module folder contains ${ADAPTER_CONFIG_FILE} and ${ADAPTER_WEIGHTS_FILE}`;

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | null)?.code;
}

async function readModuleFile(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (cause) {
    if (errorCode(cause) === 'ENOENT') {
      throw new AdapterError(`missing file ${file}: ${FOLDER_CONTENTS}`, { cause, reason: 'not_found' });
    }
    throw new AdapterError(`failed to read ${file}: ${(cause as Error).message}`, { cause, reason: 'io' });
  }
}

function parseWeights(bytes: Uint8Array, file: string): Map<string, HostTensor> {
  try {
    for (const [name, entry] of readSafetensorsHeader(bytes, file)) {
      if (entry.dtype !== 'F32' && entry.dtype !== 'F16') {
        throw new AdapterError(
          `${file}: tensor ${name} is stored as ${entry.dtype}, but module files store F32 or F16; convert the file to one of them`,
        );
      }
    }
    return parseSafetensors(bytes, file).tensors;
  } catch (cause) {
    if (!(cause instanceof SafetensorsError)) throw cause;
    throw new AdapterError(cause.message, { cause });
  }
}

/**
 * Reads a module folder and checks that its tensors match the hyper-parameters and the base-model
 * dimensions in its config and that every value is finite. With `expected`, also checks the
 * method and the base-model fingerprint against the served model, before the tensors are read.
 * Throws {@link AdapterError} naming the folder or file: reason 'not_found' for a missing folder
 * or file, 'incompatible' for a different base model, 'io' for read failures, 'invalid' otherwise.
 */
export async function readModule(
  dir: string,
  expected?: { model: ModelConfig; fingerprint: BaseModelFingerprint },
): Promise<TuningModule> {
  let isDirectory: boolean;
  try {
    isDirectory = (await stat(dir)).isDirectory();
  } catch (cause) {
    if (errorCode(cause) === 'ENOENT') {
      throw new AdapterError(`module folder ${dir} not found: ${FOLDER_CONTENTS}`, { cause, reason: 'not_found' });
    }
    throw new AdapterError(`failed to read module folder ${dir}: ${(cause as Error).message}`, { cause, reason: 'io' });
  }
  if (!isDirectory) {
    throw new AdapterError(`${dir} is not a folder: ${FOLDER_CONTENTS}`, { reason: 'not_found' });
  }

  const configFile = path.join(dir, ADAPTER_CONFIG_FILE);
  const configText = (await readModuleFile(configFile)).toString('utf8');
  let rawConfig: unknown;
  try {
    rawConfig = JSON.parse(configText);
  } catch (cause) {
    throw new AdapterError(`${configFile} is not valid JSON: ${(cause as Error).message}`, { cause });
  }
  const config = parseAdapterConfig(rawConfig, configFile);
  if (expected !== undefined) checkBaseModel(config, expected.fingerprint, configFile);

  const weightsFile = path.join(dir, ADAPTER_WEIGHTS_FILE);
  const tensors = parseWeights(await readModuleFile(weightsFile), weightsFile);
  const module = createTuningModule(config, tensors);
  validateModuleTensors(module, expected?.model ?? baseModelDimsOf(config), weightsFile);
  return module;
}



/** Returns whether `dir` can be replaced: it does not exist (false), or it is an empty or module folder (true). */
async function checkReplaceableTarget(dir: string): Promise<boolean> {
  let entries: string[];
  try {
    const stats = await lstat(dir);
    if (!stats.isDirectory()) {
      throw new AdapterError(`failed to write module to ${dir}: the path exists and is not a folder; choose another output folder`, {
        reason: 'io',
      });
    }
    entries = await readdir(dir);
  } catch (cause) {
    if (cause instanceof AdapterError) throw cause;
    if (errorCode(cause) === 'ENOENT' || errorCode(cause) === 'ENOTDIR') return false;
    throw new AdapterError(`failed to write module to ${dir}: ${(cause as Error).message}`, { cause, reason: 'io' });
  }
  if (entries.length > 0 && !entries.includes(ADAPTER_CONFIG_FILE)) {
    throw new AdapterError(
      `failed to write module to ${dir}: the folder exists and is not a module folder (it has no ${ADAPTER_CONFIG_FILE}); ` +
        'choose another output folder or empty this one',
      { reason: 'io' },
    );
  }
  return true;
}

/** Checks the module before anything touches the disk, and returns its tensors in canonical order. */
function prepareTensors(module: TuningModule, dtype: 'F32' | 'F16', dir: string): Map<string, HostTensor> {
  const source = `module to write to ${dir}`;
  const config = parseAdapterConfig(module.config, `adapter config of the ${source}`);
  const dims = baseModelDimsOf(config);
  validateModuleTensors(module, dims, source);

  const ordered = new Map<string, HostTensor>();
  for (const name of inducerTensorShapes(dims, hyperParamsOf(config)).keys()) {
    const tensor = module.tensors.get(name) as HostTensor;
    if (dtype === 'F16') {
      const index = tensor.data.findIndex((value) => Math.abs(value) > FLOAT16_MAX);
      if (index >= 0) {
        throw new AdapterError(
          `${source}: tensor ${name} has value ${tensor.data[index]} at flat index ${index}, beyond the float16 range ±${FLOAT16_MAX}; write the module as F32`,
        );
      }
    }
    ordered.set(name, tensor);
  }
  return ordered;
}

/**
 * Writes a module folder: `adapter_config.json` and `adapter_model.safetensors` stored as
 * `options.dtype` (F32 by default; F16 rounds to nearest even). The module is validated against
 * its own config first. The files go into a hidden temporary sibling folder, which is flushed to
 * disk and then renamed to `dir`. An existing module folder (one that contains
 * `adapter_config.json`) or empty folder at `dir` is renamed away first and removed after the
 * new one is in place, so `dir` is never half-written.
 * Missing parent folders are created.
 *
 * NOTE: between the two renames `dir` briefly does not exist, and a crash there leaves the old
 * module in a `.<name>.old-*` sibling. Concurrent writers to the same `dir` must be serialised by
 * the caller.
 *
 * Throws {@link AdapterError}: reason 'invalid' for an invalid module, 'io' when `dir` exists but
 * is not a module folder or when writing fails.
 */
export async function writeModule(dir: string, module: TuningModule, options?: { dtype?: 'F32' | 'F16' }): Promise<void> {
  const dtype = options?.dtype ?? 'F32';
  if (dtype !== 'F32' && dtype !== 'F16') {
    throw new AdapterError(`invalid module dtype ${JSON.stringify(dtype)}: expected "F32" or "F16"`);
  }
  const tensors = prepareTensors(module, dtype, dir);
  const configText = `${JSON.stringify(module.config, null, 2)}\n`;
  const weights = serializeSafetensors(tensors, {}, dtype);

  const target = path.resolve(dir);
  const parent = path.dirname(target);
  const basename = path.basename(target);
  const replacesExisting = await checkReplaceableTarget(target);
  try {
    await mkdir(parent, { recursive: true });
  } catch (cause) {
    throw new AdapterError(`failed to write module to ${dir}: failed to create parent folder ${parent}: ${(cause as Error).message}`, {
      cause,
      reason: 'io',
    });
  }

  const suffix = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const staging = path.join(parent, `.${basename}.tmp-${suffix}`);
  const previous = path.join(parent, `.${basename}.old-${suffix}`);
  let movedPreviousAway = false;
  try {
    await mkdir(staging);
    await writeFileSynced(path.join(staging, ADAPTER_CONFIG_FILE), configText);
    await writeFileSynced(path.join(staging, ADAPTER_WEIGHTS_FILE), weights);
    await syncFolder(staging);
    if (replacesExisting) {
      await rename(target, previous);
      movedPreviousAway = true;
    }
    await rename(staging, target);
  } catch (cause) {
    let restoreNote = '';
    if (movedPreviousAway) {
      try {
        await rename(previous, target);
      } catch (restoreError) {
        restoreNote = ` The previous version could not be moved back (${(restoreError as Error).message}) and is at ${previous}.`;
      }
    }
    // The staging folder is hidden and incomplete; a failed removal leaves only that behind.
    await rm(staging, { recursive: true, force: true }).catch(() => undefined);
    throw new AdapterError(
      `failed to write module to ${dir}: ${(cause as Error).message}; check that the folder is writable.${restoreNote}`,
      { cause, reason: 'io' },
    );
  }

  // The new module is in place; what remains is flushing the rename and removing the old version.
  try {
    await syncFolder(parent);
    if (movedPreviousAway) await rm(previous, { recursive: true, force: true });
  } catch (cause) {
    throw new AdapterError(
      `wrote the module to ${dir}, but the final step failed: ${(cause as Error).message}. ` +
        (movedPreviousAway ? `Remove the previous version at ${previous} if it is still there.` : 'Check the file system.'),
      { cause, reason: 'io' },
    );
  }
}
