/**
 * Hugging Face checkpoint loading: `config.json` plus `model.safetensors` or a sharded
 * `model.safetensors.index.json`, with tensor names mapped to one canonical set per family and
 * every tensor's shape checked against the config.
 * @module
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { loadModelConfig, type ModelConfig } from './config.js';
import { readSafetensorsFile } from './safetensors.js';
import { formatShape, type HostTensor } from './tensor.js';

/** Error for a checkpoint folder that cannot be loaded. The message names the file and the fix. */
export class CheckpointError extends Error {
  override readonly name = 'CheckpointError';
}

/** A loaded checkpoint whose weights match the shapes that {@link expectedTensorShapes} gives. */
export interface Checkpoint {
  /** Absolute path of the model folder. */
  readonly dir: string;
  readonly config: ModelConfig;
  /**
   * Canonical tensor names to float32 tensors, in the order of {@link expectedTensorShapes}.
   * GPT-2 names have no `transformer.` prefix, and Llama names are the Hugging Face names.
   */
  readonly weights: ReadonlyMap<string, HostTensor>;
  /** Absolute paths of the safetensors files read, sorted. */
  readonly weightFiles: readonly string[];
  /** Number of elements over all tensors in `weights`. */
  readonly parameterCount: number;
  /**
   * Names (as stored in the files) of tensors that the family does not use, such as `lm_head.weight`
   * of a tied model or layers beyond `num_hidden_layers`. Known non-parameter buffers
   * (GPT-2 `attn.bias`/`attn.masked_bias`, `rotary_emb.inv_freq`) are dropped without being listed.
   */
  readonly ignoredTensors: readonly string[];
}

const SINGLE_FILE = 'model.safetensors';
const INDEX_FILE = 'model.safetensors.index.json';
const GPT2_PREFIX = 'transformer.';

/** A tensor read from a weight file, with the file for error messages. */
interface StoredTensor {
  readonly tensor: HostTensor;
  readonly file: string;
}

/**
 * Returns the tensor names and shapes that the config's family needs, in a stable order.
 * GPT-2 Conv1D weights are `[in, out]`, and Llama linear weights are `[out, in]` as PyTorch stores them.
 */
export function expectedTensorShapes(config: ModelConfig): Map<string, number[]> {
  return config.family === 'gpt2' ? gpt2TensorShapes(config) : llamaTensorShapes(config);
}

function gpt2TensorShapes(config: ModelConfig): Map<string, number[]> {
  const { vocabSize: V, hiddenSize: D, intermediateSize: I, maxPositions: P } = config;
  const shapes = new Map<string, number[]>();
  shapes.set('wte.weight', [V, D]);
  shapes.set('wpe.weight', [P, D]);
  for (let i = 0; i < config.numLayers; i++) {
    const block = `h.${i}`;
    shapes.set(`${block}.ln_1.weight`, [D]);
    shapes.set(`${block}.ln_1.bias`, [D]);
    shapes.set(`${block}.attn.c_attn.weight`, [D, 3 * D]);
    shapes.set(`${block}.attn.c_attn.bias`, [3 * D]);
    shapes.set(`${block}.attn.c_proj.weight`, [D, D]);
    shapes.set(`${block}.attn.c_proj.bias`, [D]);
    shapes.set(`${block}.ln_2.weight`, [D]);
    shapes.set(`${block}.ln_2.bias`, [D]);
    shapes.set(`${block}.mlp.c_fc.weight`, [D, I]);
    shapes.set(`${block}.mlp.c_fc.bias`, [I]);
    shapes.set(`${block}.mlp.c_proj.weight`, [I, D]);
    shapes.set(`${block}.mlp.c_proj.bias`, [D]);
  }
  shapes.set('ln_f.weight', [D]);
  shapes.set('ln_f.bias', [D]);
  if (!config.tieWordEmbeddings) shapes.set('lm_head.weight', [V, D]);
  return shapes;
}

function llamaTensorShapes(config: ModelConfig): Map<string, number[]> {
  const { vocabSize: V, hiddenSize: D, intermediateSize: I } = config;
  const queryWidth = config.numHeads * config.headDim;
  const keyValueWidth = config.numKeyValueHeads * config.headDim;
  const shapes = new Map<string, number[]>();
  shapes.set('model.embed_tokens.weight', [V, D]);
  for (let i = 0; i < config.numLayers; i++) {
    const layer = `model.layers.${i}`;
    shapes.set(`${layer}.input_layernorm.weight`, [D]);
    shapes.set(`${layer}.self_attn.q_proj.weight`, [queryWidth, D]);
    shapes.set(`${layer}.self_attn.k_proj.weight`, [keyValueWidth, D]);
    shapes.set(`${layer}.self_attn.v_proj.weight`, [keyValueWidth, D]);
    if (config.attentionBias) {
      shapes.set(`${layer}.self_attn.q_proj.bias`, [queryWidth]);
      shapes.set(`${layer}.self_attn.k_proj.bias`, [keyValueWidth]);
      shapes.set(`${layer}.self_attn.v_proj.bias`, [keyValueWidth]);
    }
    shapes.set(`${layer}.self_attn.o_proj.weight`, [D, queryWidth]);
    if (config.outputProjectionBias) shapes.set(`${layer}.self_attn.o_proj.bias`, [D]);
    shapes.set(`${layer}.post_attention_layernorm.weight`, [D]);
    shapes.set(`${layer}.mlp.gate_proj.weight`, [I, D]);
    shapes.set(`${layer}.mlp.up_proj.weight`, [I, D]);
    shapes.set(`${layer}.mlp.down_proj.weight`, [D, I]);
    if (config.mlpBias) {
      shapes.set(`${layer}.mlp.gate_proj.bias`, [I]);
      shapes.set(`${layer}.mlp.up_proj.bias`, [I]);
      shapes.set(`${layer}.mlp.down_proj.bias`, [D]);
    }
  }
  shapes.set('model.norm.weight', [D]);
  if (!config.tieWordEmbeddings) shapes.set('lm_head.weight', [V, D]);
  return shapes;
}

/** Tests whether a stored name is a non-parameter buffer, which older exports include. */
function isBuffer(config: ModelConfig, name: string): boolean {
  if (config.family === 'gpt2') return /^(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$/.test(name);
  return name.endsWith('.rotary_emb.inv_freq');
}

/** Maps a stored tensor name to its canonical name. */
function canonicalName(config: ModelConfig, name: string): string {
  if (config.family === 'gpt2' && name.startsWith(GPT2_PREFIX)) return name.slice(GPT2_PREFIX.length);
  return name;
}

/**
 * Loads a Hugging Face checkpoint folder: `config.json` (validated by `loadModelConfig`) and
 * either `model.safetensors` or `model.safetensors.index.json` with its shards. Tensors are
 * widened to float32 and checked against {@link expectedTensorShapes}.
 *
 * @throws CheckpointError for a missing folder, config.json, weight file, shard or tensor, for a
 *   tensor with the wrong shape, and for a tensor that the decoder cannot use.
 * @throws ModelConfigError for an invalid config.json (for example an unknown `model_type`).
 * @throws SafetensorsError for a weight file that is truncated or corrupted.
 */
export async function loadCheckpoint(dir: string): Promise<Checkpoint> {
  const folder = path.resolve(dir);
  const fileNames = await listFolder(folder);
  if (!fileNames.includes('config.json')) {
    throw new CheckpointError(
      `model folder ${folder} has no config.json (found: ${formatFileList(fileNames)}); ` +
        'a Hugging Face checkpoint folder needs config.json next to its weights',
    );
  }
  const config = await loadModelConfig(folder);

  let stored: Map<string, StoredTensor>;
  let weightFiles: string[];
  if (fileNames.includes(SINGLE_FILE)) {
    const file = path.join(folder, SINGLE_FILE);
    stored = await readWeightFiles([file]);
    weightFiles = [file];
  } else if (fileNames.includes(INDEX_FILE)) {
    ({ stored, weightFiles } = await readShardedWeights(folder));
  } else {
    throw new CheckpointError(
      `model folder ${folder} has neither ${SINGLE_FILE} nor ${INDEX_FILE} (found: ${formatFileList(fileNames)}); ` +
        'save the weights in safetensors format (for example with save_pretrained(..., safe_serialization=True))',
    );
  }

  const { weights, ignoredTensors } = selectWeights(config, stored, folder, weightFiles);
  let parameterCount = 0;
  for (const tensor of weights.values()) parameterCount += tensor.data.length;
  return { dir: folder, config, weights, weightFiles, parameterCount, ignoredTensors };
}

async function listFolder(folder: string): Promise<string[]> {
  let isDirectory: boolean;
  try {
    isDirectory = (await stat(folder)).isDirectory();
  } catch (cause) {
    throw new CheckpointError(
      `model folder ${folder} not found; pass the folder that contains config.json and the safetensors weights`,
      { cause },
    );
  }
  if (!isDirectory) {
    throw new CheckpointError(
      `model path ${folder} is a file, not a folder; pass the folder that contains config.json and the safetensors weights`,
    );
  }
  return (await readdir(folder)).sort();
}

function formatFileList(fileNames: readonly string[]): string {
  return fileNames.length === 0 ? 'no files' : fileNames.join(', ');
}

/** Reads safetensors files into one map keyed by stored name. A name found in two files is an error. */
async function readWeightFiles(files: readonly string[]): Promise<Map<string, StoredTensor>> {
  const stored = new Map<string, StoredTensor>();
  for (const file of files) {
    const { tensors } = await readSafetensorsFile(file);
    for (const [name, tensor] of tensors) {
      const previous = stored.get(name);
      if (previous !== undefined) {
        throw new CheckpointError(
          `tensor "${name}" is stored in both ${previous.file} and ${file}; remove one copy so the weight is unambiguous`,
        );
      }
      stored.set(name, { tensor, file });
    }
  }
  return stored;
}

/** Reads `model.safetensors.index.json` and its shards, checking that every shard exists and contains its tensors. */
async function readShardedWeights(folder: string): Promise<{ stored: Map<string, StoredTensor>; weightFiles: string[] }> {
  const indexFile = path.join(folder, INDEX_FILE);
  const weightMap = await readWeightMap(indexFile);

  const shardNames = [...new Set(weightMap.values())].sort();
  const weightFiles: string[] = [];
  for (const shard of shardNames) {
    const file = path.resolve(folder, shard);
    if (path.dirname(file) !== folder) {
      throw new CheckpointError(
        `${indexFile}: shard "${shard}" is not a file name inside ${folder}; weight_map values must be file names such as model-00001-of-00002.safetensors`,
      );
    }
    const exists = await stat(file).then(
      (info) => info.isFile(),
      () => false,
    );
    if (!exists) {
      throw new CheckpointError(
        `missing shard ${file}: ${indexFile} lists it in weight_map; download every shard of the checkpoint`,
      );
    }
    weightFiles.push(file);
  }

  const stored = await readWeightFiles(weightFiles);
  for (const [name, shard] of weightMap) {
    const file = path.resolve(folder, shard);
    const found = stored.get(name);
    if (found === undefined || found.file !== file) {
      const actual = found === undefined ? 'no shard contains it' : `it is in ${found.file}`;
      throw new CheckpointError(
        `tensor "${name}" not found in shard ${file} where ${indexFile} places it (${actual}); the index does not match the shards, so download the checkpoint again`,
      );
    }
  }
  return { stored, weightFiles };
}

async function readWeightMap(indexFile: string): Promise<Map<string, string>> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(indexFile, 'utf8'));
  } catch (cause) {
    throw new CheckpointError(`${indexFile} is not valid JSON; download the checkpoint again`, { cause });
  }
  const weightMap = (raw as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new CheckpointError(`${indexFile} has no "weight_map" object mapping tensor names to shard files`);
  }
  const entries = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string' || shard.length === 0) {
      throw new CheckpointError(`${indexFile}: weight_map["${name}"] is ${JSON.stringify(shard)}, expected a shard file name`);
    }
    entries.set(name, shard);
  }
  return entries;
}

/**
 * Picks the tensors the family needs under canonical names, in the expected order, and checks
 * their shapes. Everything else goes to `ignoredTensors`, except buffers and except parameters
 * that the decoder cannot apply, which are rejected.
 */
function selectWeights(
  config: ModelConfig,
  stored: ReadonlyMap<string, StoredTensor>,
  folder: string,
  weightFiles: readonly string[],
): { weights: Map<string, HostTensor>; ignoredTensors: string[] } {
  const byCanonicalName = new Map<string, { storedName: string } & StoredTensor>();
  for (const [storedName, entry] of stored) {
    if (isBuffer(config, storedName)) continue;
    const name = canonicalName(config, storedName);
    const previous = byCanonicalName.get(name);
    if (previous !== undefined) {
      throw new CheckpointError(
        `tensors "${previous.storedName}" and "${storedName}" both map to "${name}"; keep only one of them in the checkpoint`,
      );
    }
    byCanonicalName.set(name, { storedName, ...entry });
  }

  const expected = expectedTensorShapes(config);
  const searched = weightFiles.map((file) => path.relative(folder, file)).join(', ');
  const missing = [...expected.keys()].filter((name) => !byCanonicalName.has(name));
  if (missing.length > 0) {
    const shown = missing.slice(0, 5).map((name) => `"${name}"`).join(', ');
    const more = missing.length > 5 ? ` and ${missing.length - 5} more` : '';
    const prefixNote = config.family === 'gpt2' ? ` (with or without the "${GPT2_PREFIX}" prefix)` : '';
    throw new CheckpointError(
      `checkpoint ${folder}: tensor ${shown}${more}${prefixNote} not found in ${searched}; ` +
        'check that config.json (layer count, tie_word_embeddings, attention_bias, mlp_bias) matches the weights',
    );
  }

  const weights = new Map<string, HostTensor>();
  for (const [name, shape] of expected) {
    const entry = byCanonicalName.get(name)!;
    if (!sameShape(entry.tensor.shape, shape)) {
      throw new CheckpointError(
        `${entry.file}: tensor "${entry.storedName}" has shape ${formatShape(entry.tensor.shape)}, ` +
          `expected ${formatShape(shape)} from config.json; check that config.json belongs to these weights`,
      );
    }
    weights.set(name, entry.tensor);
  }

  const ignoredTensors: string[] = [];
  for (const [name, entry] of byCanonicalName) {
    if (expected.has(name)) continue;
    ignoredTensors.push(entry.storedName);
  }
  return { weights, ignoredTensors: ignoredTensors.sort() };
}

function sameShape(actual: readonly number[], expected: readonly number[]): boolean {
  return actual.length === expected.length && actual.every((d, i) => d === expected[i]);
}

