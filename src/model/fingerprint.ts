/**
 * Base-model fingerprint: the architecture, the dimensions and a SHA-256 of the weight files of
 * the frozen model. A tuning module records the fingerprint of the model it was trained for, and
 * the server rejects a module whose fingerprint differs from the model it runs.
 * @module
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { ModelConfig, ModelFamily } from './config.js';

/** Identity of a frozen base model. Field names use snake_case because the object is stored in `adapter_config.json`. */
export interface BaseModelFingerprint {
  architecture: ModelFamily;
  /** `model_type` exactly as `config.json` gives it (`gpt2`, `llama`, `mistral`, `qwen2`). */
  model_type: string;
  hidden_size: number;
  num_layers: number;
  /** Query heads. */
  num_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  vocab_size: number;
  /** Lowercase hex SHA-256 over the weight files, computed by {@link fingerprintModel}. */
  weights_sha256: string;
}

/** Error for weight files that cannot be hashed; the message names the file. */
export class FingerprintError extends Error {
  override readonly name = 'FingerprintError';
}

/** Fingerprint fields in the order that mismatch messages list them. */
const FINGERPRINT_FIELDS = [
  'architecture',
  'model_type',
  'hidden_size',
  'num_layers',
  'num_heads',
  'num_key_value_heads',
  'head_dim',
  'vocab_size',
  'weights_sha256',
] as const satisfies readonly (keyof BaseModelFingerprint)[];

/** Feeds one file into `hash` and returns the number of bytes read. */
async function hashFileContents(hash: Hash, file: string): Promise<number> {
  let numBytes = 0;
  const stream = createReadStream(file);
  for await (const chunk of stream) {
    const bytes = chunk as Buffer;
    hash.update(bytes);
    numBytes += bytes.byteLength;
  }
  return numBytes;
}

/**
 * Computes the fingerprint of a model from its normalised config and its weight files.
 *
 * The hash is SHA-256 over the files in sorted basename order (JavaScript's default string
 * order, which equals byte order for ASCII names). Each file contributes its basename in UTF-8,
 * one zero byte, its byte length as an unsigned 64-bit little-endian integer, then its contents,
 * streamed. The names and lengths make the hash change when the same weights are split into
 * different shards. Throws {@link FingerprintError} when the list is empty, two files share a
 * basename, or a file cannot be read or changes size while it is read.
 */
export async function fingerprintModel(config: ModelConfig, weightFiles: readonly string[]): Promise<BaseModelFingerprint> {
  if (weightFiles.length === 0) {
    throw new FingerprintError('no weight files to fingerprint: pass the paths of the model\'s .safetensors files');
  }
  const byBasename = new Map<string, string>();
  for (const file of weightFiles) {
    const basename = path.basename(file);
    const previous = byBasename.get(basename);
    if (previous !== undefined) {
      throw new FingerprintError(
        `weight files ${previous} and ${file} have the same basename "${basename}"; the fingerprint orders files by basename, so basenames must be unique`,
      );
    }
    byBasename.set(basename, file);
  }

  const hash = createHash('sha256');
  for (const basename of [...byBasename.keys()].sort()) {
    const file = byBasename.get(basename) as string;
    let sizeBytes: number;
    try {
      sizeBytes = (await stat(file)).size;
    } catch (cause) {
      throw new FingerprintError(`failed to read weight file ${file}: ${(cause as Error).message}`, { cause });
    }
    const lengthField = Buffer.alloc(8);
    lengthField.writeBigUInt64LE(BigInt(sizeBytes));
    hash.update(Buffer.from(basename, 'utf8'));
    hash.update(Buffer.from([0]));
    hash.update(lengthField);

    let numBytesRead: number;
    try {
      numBytesRead = await hashFileContents(hash, file);
    } catch (cause) {
      throw new FingerprintError(`failed to read weight file ${file}: ${(cause as Error).message}`, { cause });
    }
    if (numBytesRead !== sizeBytes) {
      throw new FingerprintError(
        `weight file ${file} changed while it was hashed (${sizeBytes} bytes expected, ${numBytesRead} read); fingerprint it again once it is complete`,
      );
    }
  }

  return {
    architecture: config.family,
    model_type: config.modelType,
    hidden_size: config.hiddenSize,
    num_layers: config.numLayers,
    num_heads: config.numHeads,
    num_key_value_heads: config.numKeyValueHeads,
    head_dim: config.headDim,
    vocab_size: config.vocabSize,
    weights_sha256: hash.digest('hex'),
  };
}

/**
 * Compares two fingerprints. Returns null when every field is equal, otherwise one clause per
 * differing field with both values, such as `hidden_size (expected 768, found 64)`.
 */
export function describeFingerprintMismatch(expected: BaseModelFingerprint, actual: BaseModelFingerprint): string | null {
  const differences: string[] = [];
  for (const field of FINGERPRINT_FIELDS) {
    if (expected[field] !== actual[field]) {
      differences.push(`${field} (expected ${JSON.stringify(expected[field])}, found ${JSON.stringify(actual[field])})`);
    }
  }
  return differences.length === 0 ? null : differences.join('; ');
}
