/**
 * The tuning methods side by side: one settings union, and tensor shapes, validation and fresh
 * tensors dispatched by method. Inducer settings carry no `method` field (it is optional), so
 * existing inducer callers keep working.
 * @module
 */
import type { ModelConfig } from '../model/config.js';
import type { HostTensor } from '../model/tensor.js';
import { inducerTensorShapes, initInducerTensors, validateInducerHyperParams, InducerHyperParamsError, type InducerHyperParams, type InducerInit } from './inducer.js';
import { initLoraTensors, loraTensorShapes, validateLoraSettings, LoraSettingsError, type LoraSettings } from './lora.js';
import { initPrefixTensors, prefixTensorShapes, validatePrefixSettings, PrefixSettingsError, type PrefixSettings } from './prefix.js';

/** Names of the tuning methods. */
export type TuningMethod = 'inducer' | 'prefix' | 'lora';

/** Settings of a module of any method; inducer settings are recognised by a missing or `'inducer'` method. */
export type MethodSettings = InducerHyperParams | PrefixSettings | LoraSettings;

/** Model dimensions that determine the tensor shapes of every method. */
export type MethodModelDims = Pick<ModelConfig, 'hiddenSize' | 'numLayers' | 'numHeads' | 'numKeyValueHeads' | 'headDim'>;

/** Returns the method of `settings`. */
export function methodOf(settings: MethodSettings): TuningMethod {
  return settings.method ?? 'inducer';
}

/** Returns whether an error is one of the settings errors of {@link validateMethodSettings}. */
export function isSettingsError(error: unknown): error is InducerHyperParamsError | PrefixSettingsError | LoraSettingsError {
  return error instanceof InducerHyperParamsError || error instanceof PrefixSettingsError || error instanceof LoraSettingsError;
}

/** Throws the method's settings error (see {@link isSettingsError}) naming the first invalid field. */
export function validateMethodSettings(settings: MethodSettings): void {
  if (settings.method === 'prefix') validatePrefixSettings(settings);
  else if (settings.method === 'lora') validateLoraSettings(settings);
  else validateInducerHyperParams(settings);
}

/** Lists every tensor of a module with these settings, with its shape, in the canonical file order. */
export function moduleTensorShapes(dims: MethodModelDims, settings: MethodSettings): Map<string, number[]> {
  if (settings.method === 'prefix') return prefixTensorShapes(dims, settings);
  if (settings.method === 'lora') return loraTensorShapes(dims, settings);
  return inducerTensorShapes(dims, settings);
}

/**
 * Creates the tensors of a fresh module. `init` applies to inducer modules only: prefix and LoRA
 * modules have one initialisation each (see `initPrefixTensors` and `initLoraTensors`).
 */
export function initModuleTensors(dims: MethodModelDims, settings: MethodSettings, init: InducerInit, seed: number): Map<string, HostTensor> {
  if (settings.method === 'prefix') return initPrefixTensors(dims, settings, seed);
  if (settings.method === 'lora') return initLoraTensors(dims, settings, seed);
  return initInducerTensors(dims, settings, init, seed);
}
