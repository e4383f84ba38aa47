/**
 * Tuning modules in memory: the parsed `adapter_config.json` with its tensors, creation of fresh
 * modules (inducer, prefix or LoRA) and validation against the model being served.
 * @module
 */
import type { ModelConfig } from '../model/config.js';
import { describeFingerprintMismatch, type BaseModelFingerprint } from '../model/fingerprint.js';
import { formatShape, type HostTensor } from '../model/tensor.js';
import type { InducerHyperParams, InducerInit } from '../tuning/inducer.js';
import { LORA_TARGET_MODULES } from '../tuning/lora.js';
import {
  initModuleTensors,
  isSettingsError,
  moduleTensorShapes,
  validateMethodSettings,
  type MethodModelDims,
  type MethodSettings,
} from '../tuning/method.js';
import { ADAPTER_FORMAT_VERSION, AdapterError, parseAdapterConfig, SUPPORTED_METHODS, type AdapterConfig } from './adapter-config.js';

export { AdapterError, type AdapterErrorReason } from './adapter-config.js';

/** A tuning module: its config and its parameters (float32 in host memory). */
export interface TuningModule {
  readonly config: AdapterConfig;
  /** Parameters by tensor name, such as `layers.0.inducer.value.up.weight`. */
  readonly tensors: ReadonlyMap<string, HostTensor>;
  /** Bytes the tensors occupy in host memory (4 per float32 value), for cache budgets. */
  readonly sizeBytes: number;
}

/** Creates a module from a config and its tensors and computes its size. Does not validate. */
export function createTuningModule(config: AdapterConfig, tensors: ReadonlyMap<string, HostTensor>): TuningModule {
  let sizeBytes = 0;
  for (const tensor of tensors.values()) sizeBytes += tensor.data.byteLength;
  return { config, tensors, sizeBytes };
}

/**
 * Returns the method settings of a module config. Inducer settings have no `method` field, as
 * callers written for inducer modules alone expect.
 */
export function hyperParamsOf(config: AdapterConfig): MethodSettings {
  if (config.method === 'prefix') return { method: 'prefix', prefixLength: config.prefix_length };
  if (config.method === 'lora') return { method: 'lora', rank: config.rank, alpha: config.alpha };
  return {
    keyRank: config.key_rank,
    valueRank: config.value_rank,
    loraQ: config.lora_q === null ? null : { rank: config.lora_q.rank, alpha: config.lora_q.alpha, bias: config.lora_q.bias },
  };
}

/** Returns the dimensions a config's `base_model` records, which determine the tensor shapes. */
export function baseModelDimsOf(config: AdapterConfig): MethodModelDims {
  const base = config.base_model;
  return {
    hiddenSize: base.hidden_size,
    numLayers: base.num_layers,
    numHeads: base.num_heads,
    numKeyValueHeads: base.num_key_value_heads,
    headDim: base.head_dim,
  };
}

/** Describes the hyper-parameters of a config for messages, such as `key_rank 5, value_rank 12 and lora_q`. */
function describeHyperParams(config: AdapterConfig): string {
  if (config.method === 'prefix') return `prefix_length ${config.prefix_length}`;
  if (config.method === 'lora') return `LoRA rank ${config.rank} on q and v`;
  return `key_rank ${config.key_rank}, value_rank ${config.value_rank} and lora_q`;
}

function describeBaseModel(fingerprint: BaseModelFingerprint): string {
  return `${fingerprint.model_type} with weights sha256 ${fingerprint.weights_sha256.slice(0, 12)}…`;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((size, i) => size === b[i]);
}

/** Converts a flat row-major index into per-dimension indices. */
function unflattenIndex(flatIndex: number, shape: readonly number[]): number[] {
  const indices = new Array<number>(shape.length);
  let rest = flatIndex;
  for (let axis = shape.length - 1; axis >= 0; axis--) {
    indices[axis] = rest % shape[axis];
    rest = Math.floor(rest / shape[axis]);
  }
  return indices;
}

/**
 * Checks that a module has exactly the tensors its hyper-parameters call for on a model of
 * `dims`, each with the expected shape, and that every value is finite. Does not compare base
 * models; {@link validateModule} does. Throws {@link AdapterError} (reason 'invalid') naming
 * `source`, the tensor, and the expected shape or the first non-finite index.
 */
export function validateModuleTensors(module: TuningModule, dims: MethodModelDims, source = 'module'): void {
  let expectedShapes: Map<string, number[]>;
  try {
    expectedShapes = moduleTensorShapes(dims, hyperParamsOf(module.config));
  } catch (cause) {
    if (!isSettingsError(cause)) throw cause;
    throw new AdapterError(`${source}: ${cause.message}`, { cause });
  }

  const missing = [...expectedShapes.keys()].filter((name) => !module.tensors.has(name));
  if (missing.length > 0) {
    throw new AdapterError(
      `${source}: ${missing.length} expected tensor(s) missing, first ${missing[0]} with shape ${formatShape(expectedShapes.get(missing[0]) ?? [])}; ` +
        `the tensors do not match ${describeHyperParams(module.config)} in adapter_config.json`,
    );
  }
  const unexpected = [...module.tensors.keys()].filter((name) => !expectedShapes.has(name));
  const method = module.config.method;
  const expectedKinds =
    method === 'inducer' ? `the inducer${module.config.lora_q === null ? '' : ' and lora_q'}` : method === 'prefix' ? 'the prefix' : 'the lora.q and lora.v';
  if (unexpected.length > 0) {
    throw new AdapterError(
      `${source}: unexpected tensor(s) ${unexpected.slice(0, 5).join(', ')}${unexpected.length > 5 ? ', ...' : ''}; ` +
        `a module with these hyper-parameters and base model has only ${expectedKinds} tensors of ${dims.numLayers} layers`,
    );
  }

  for (const [name, expectedShape] of expectedShapes) {
    const tensor = module.tensors.get(name) as HostTensor;
    if (!sameShape(tensor.shape, expectedShape)) {
      throw new AdapterError(
        `${source}: tensor ${name} has shape ${formatShape(tensor.shape)} but ${formatShape(expectedShape)} was expected ` +
          `for hidden_size ${dims.hiddenSize}, ${dims.numHeads} heads of size ${dims.headDim} and the ranks in adapter_config.json`,
      );
    }
    const values = tensor.data;
    for (let i = 0; i < values.length; i++) {
      if (!Number.isFinite(values[i])) {
        throw new AdapterError(
          `${source}: tensor ${name} contains ${values[i]} at index ${formatShape(unflattenIndex(i, tensor.shape))} (flat index ${i}); ` +
            'the module diverged or the file is corrupted, so train it again or restore a good copy',
        );
      }
    }
  }
}

/**
 * Checks that a module config names a supported method and was trained for the model with
 * `fingerprint`. Throws {@link AdapterError}: reason 'incompatible' for a different base model,
 * 'invalid' for an unsupported method. `source` names the module in messages.
 */
export function checkBaseModel(config: AdapterConfig, fingerprint: BaseModelFingerprint, source = 'module'): void {
  const method: string = config.method;
  if (!(SUPPORTED_METHODS as readonly string[]).includes(method)) {
    throw new AdapterError(`${source}: method "${method}" is not supported; this server runs ${SUPPORTED_METHODS.join(', ')} modules`);
  }
  const mismatch = describeFingerprintMismatch(config.base_model, fingerprint);
  if (mismatch !== null) {
    throw new AdapterError(
      `${source}: module was trained for base model ${describeBaseModel(config.base_model)} ` +
        `but the server runs ${describeBaseModel(fingerprint)}; differing fields (expected = module, found = server): ${mismatch}. ` +
        'Serve the module with the model it was trained for, or train it again on this model',
      { reason: 'incompatible' },
    );
  }
}

/**
 * Checks a module against the model being served: the method, the base-model fingerprint, every
 * expected tensor present with the right shape, no unexpected tensor, and all values finite.
 * Throws {@link AdapterError}: reason 'incompatible' for a different base model, 'invalid' for
 * everything else. `source` (default `module`) names the module in messages.
 */
export function validateModule(
  module: TuningModule,
  model: ModelConfig,
  fingerprint: BaseModelFingerprint,
  source = 'module',
): void {
  checkBaseModel(module.config, fingerprint, source);
  validateModuleTensors(module, model, source);
}

/**
 * Creates a fresh inducer module for `model` with tensors from `initInducerTensors`.
 * `created_at` is the current time. Throws {@link AdapterError} for invalid hyper-parameters or
 * task metadata (for example a prompt template without `{prompt}`).
 */
export function createInducerModule(
  model: ModelConfig,
  fingerprint: BaseModelFingerprint,
  hp: InducerHyperParams,
  options: { init: InducerInit; seed: number; task?: AdapterConfig['task'] },
): TuningModule {
  return createModule(model, fingerprint, hp, options);
}

/** Returns the method part of `adapter_config.json` for `settings`. */
function methodFields(settings: MethodSettings): Record<string, unknown> {
  if (settings.method === 'prefix') return { method: 'prefix', prefix_length: settings.prefixLength };
  if (settings.method === 'lora') return { method: 'lora', rank: settings.rank, alpha: settings.alpha, target_modules: [...LORA_TARGET_MODULES] };
  return {
    method: 'inducer',
    key_rank: settings.keyRank,
    value_rank: settings.valueRank,
    lora_q: settings.loraQ === null ? null : { rank: settings.loraQ.rank, alpha: settings.loraQ.alpha, bias: settings.loraQ.bias },
  };
}

/**
 * Creates a fresh module of any method for `model` with tensors from `initModuleTensors`
 * (`init` applies to inducer modules only). `created_at` is the current time. Throws
 * {@link AdapterError} for invalid settings or task metadata.
 */
export function createModule(
  model: ModelConfig,
  fingerprint: BaseModelFingerprint,
  settings: MethodSettings,
  options: { init: InducerInit; seed: number; task?: AdapterConfig['task'] },
): TuningModule {
  try {
    validateMethodSettings(settings);
  } catch (cause) {
    if (!isSettingsError(cause)) throw cause;
    throw new AdapterError(cause.message, { cause });
  }
  const draft = {
    format_version: ADAPTER_FORMAT_VERSION,
    ...methodFields(settings),
    base_model: { ...fingerprint },
    ...(options.task === undefined ? {} : { task: options.task }),
    created_at: new Date().toISOString(),
  };
  const config = parseAdapterConfig(draft, 'new module config');
  return createTuningModule(config, initModuleTensors(model, settings, options.init, options.seed));
}
