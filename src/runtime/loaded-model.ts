/**
 * A served model: the checkpoint's config, tokenizer and fingerprint with its engine, loaded once.
 * @module
 */
import { readModule } from '../adapters/module-files.js';
import type { TuningModule } from '../adapters/module.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import type { ModelConfig } from '../model/config.js';
import { fingerprintModel, type BaseModelFingerprint } from '../model/fingerprint.js';
import { loadTokenizer, type TextTokenizer } from '../model/tokenizer.js';
import { Engine, type EngineOptions } from './engine.js';
import type { SlotModule } from './slot-table.js';

export interface LoadedModel {
  readonly dir: string;
  readonly config: ModelConfig;
  readonly tokenizer: TextTokenizer;
  readonly fingerprint: BaseModelFingerprint;
  readonly engine: Engine;
  readonly parameterCount: number;
  /** Stored names of checkpoint tensors that the model does not use. */
  readonly ignoredTensors: readonly string[];
  /** Seconds to read the checkpoint, hash it and build the session. */
  readonly loadSeconds: number;
}

/** Loads checkpoint, tokenizer and fingerprint from a Hugging Face model folder and builds the engine. */
export async function loadModel(dir: string, options: EngineOptions = {}): Promise<LoadedModel> {
  const started = performance.now();
  const checkpoint = await loadCheckpoint(dir);
  const [tokenizer, fingerprint] = await Promise.all([
    loadTokenizer(dir, checkpoint.config),
    fingerprintModel(checkpoint.config, checkpoint.weightFiles),
  ]);
  const engine = await Engine.create(checkpoint.config, checkpoint.weights, options);
  return {
    dir: checkpoint.dir,
    config: checkpoint.config,
    tokenizer,
    fingerprint,
    engine,
    parameterCount: checkpoint.parameterCount,
    ignoredTensors: checkpoint.ignoredTensors,
    loadSeconds: (performance.now() - started) / 1000,
  };
}

const slotModules = new WeakMap<TuningModule, SlotModule>();

/** Returns the slot-table view of a module; the same module object always gets the same view. */
export function slotModuleOf(module: TuningModule): SlotModule {
  let view = slotModules.get(module);
  if (!view) {
    view = slotViewOf(module);
    slotModules.set(module, view);
  }
  return view;
}

function slotViewOf(module: TuningModule): SlotModule {
  const config = module.config;
  if (config.method === 'prefix') return { method: 'prefix', prefixLength: config.prefix_length, tensors: module.tensors };
  if (config.method === 'lora') return { method: 'lora', rank: config.rank, alpha: config.alpha, tensors: module.tensors };
  return { keyRank: config.key_rank, valueRank: config.value_rank, loraQ: config.lora_q, tensors: module.tensors };
}

/** Reads a module folder and validates it against the loaded model. */
export async function loadModuleFor(model: LoadedModel, dir: string): Promise<TuningModule> {
  return readModule(dir, { model: model.config, fingerprint: model.fingerprint });
}

/** Prompt token ids for generation: the tokenizer's encoding, or BOS alone for an empty prompt without one. */
export function promptTokenIds(model: LoadedModel, prompt: string): number[] {
  const ids = model.tokenizer.encode(prompt);
  if (ids.length > 0) return ids;
  const bos = model.tokenizer.bosTokenId ?? model.config.bosTokenId ?? model.tokenizer.eosTokenIds[0];
  if (bos === undefined || bos === null) {
    throw new Error('the prompt is empty and the tokenizer has no BOS or EOS token to start from; pass a non-empty prompt');
  }
  return [bos];
}
