import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { loadModelConfig, parseModelConfig } from '../../src/model/config.js';
import {
  describeFingerprintMismatch,
  fingerprintModel,
  FingerprintError,
  type BaseModelFingerprint,
} from '../../src/model/fingerprint.js';

const STORIES_DIR = '/work/shared/models/stories260k';

const tinyConfig = parseModelConfig({ model_type: 'gpt2', n_embd: 16, n_layer: 2, n_head: 4, vocab_size: 50, n_positions: 32 });

/** Naive reference: builds the whole framed byte string in memory, then hashes it once. */
function referenceDigest(files: { basename: string; contents: Buffer }[]): string {
  const sorted = [...files].sort((a, b) => (a.basename < b.basename ? -1 : 1));
  const parts: Buffer[] = [];
  for (const { basename, contents } of sorted) {
    const length = Buffer.alloc(8);
    length.writeUInt32LE(contents.length, 0); // high word stays 0 for these small files
    parts.push(Buffer.from(`${basename}\0`, 'utf8'), length, contents);
  }
  return createHash('sha256').update(Buffer.concat(parts)).digest('hex');
}

describe('fingerprintModel', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'fingerprint-'));
    await writeFile(path.join(dir, 'a.bin'), 'abc');
    await writeFile(path.join(dir, 'b.bin'), '');
    await writeFile(path.join(dir, 'ab.bin'), 'abc');
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('hashes stories260k as sha256sum does', async () => {
    const config = await loadModelConfig(STORIES_DIR);
    const fingerprint = await fingerprintModel(config, [path.join(STORIES_DIR, 'model.safetensors')]);
    // From a shell: { printf 'model.safetensors\x00\xf8\xf1\x0f\x00\x00\x00\x00\x00'; cat model.safetensors; } | sha256sum
    // (1,044,984 bytes = 0x0ff1f8, little-endian).
    assert.deepEqual(fingerprint, {
      architecture: 'llama',
      model_type: 'llama',
      hidden_size: 64,
      num_layers: 5,
      num_heads: 8,
      num_key_value_heads: 4,
      head_dim: 8,
      vocab_size: 512,
      weights_sha256: 'cd31153bc06fab693b5dbb608939ce5132138289913cdd33331b3cf69c654ab1',
    });
  });

  it('sorts files by basename', async () => {
    // From a shell: { printf 'a.bin\x00\x03\x00\x00\x00\x00\x00\x00\x00abc'; printf 'b.bin\x00' + 8 zero bytes; } | sha256sum
    const expected = '2b109e200f5c3af4d1ab71dd655afa75c9b12c5b2ca94165f2480b67b34a70c1';
    const forward = await fingerprintModel(tinyConfig, [path.join(dir, 'a.bin'), path.join(dir, 'b.bin')]);
    const backward = await fingerprintModel(tinyConfig, [path.join(dir, 'b.bin'), path.join(dir, 'a.bin')]);
    assert.equal(forward.weights_sha256, expected);
    assert.equal(backward.weights_sha256, expected);
    assert.equal(
      expected,
      referenceDigest([
        { basename: 'a.bin', contents: Buffer.from('abc') },
        { basename: 'b.bin', contents: Buffer.alloc(0) },
      ]),
    );
  });

  it('changes when the weights are re-sharded', async () => {
    const oneShard = await fingerprintModel(tinyConfig, [path.join(dir, 'ab.bin')]);
    const twoShards = await fingerprintModel(tinyConfig, [path.join(dir, 'a.bin'), path.join(dir, 'b.bin')]);
    assert.equal(oneShard.weights_sha256, referenceDigest([{ basename: 'ab.bin', contents: Buffer.from('abc') }]));
    assert.notEqual(oneShard.weights_sha256, twoShards.weights_sha256);
  });

  it('copies the dimensions from the config', async () => {
    const fingerprint = await fingerprintModel(tinyConfig, [path.join(dir, 'a.bin')]);
    assert.equal(fingerprint.architecture, 'gpt2');
    assert.equal(fingerprint.model_type, 'gpt2');
    assert.equal(fingerprint.hidden_size, 16);
    assert.equal(fingerprint.num_layers, 2);
    assert.equal(fingerprint.num_heads, 4);
    assert.equal(fingerprint.num_key_value_heads, 4);
    assert.equal(fingerprint.head_dim, 4);
    assert.equal(fingerprint.vocab_size, 50);
  });

  it('rejects a missing file', async () => {
    const missing = path.join(dir, 'missing.safetensors');
    await assert.rejects(
      fingerprintModel(tinyConfig, [missing]),
      (error: unknown) => error instanceof FingerprintError && error.message.includes(missing),
    );
  });

  it('rejects an empty file list', async () => {
    await assert.rejects(fingerprintModel(tinyConfig, []), FingerprintError);
  });

  it('rejects duplicate basenames', async () => {
    await assert.rejects(
      fingerprintModel(tinyConfig, [path.join(dir, 'a.bin'), path.join(dir, 'sub', 'a.bin')]),
      (error: unknown) => error instanceof FingerprintError && error.message.includes('same basename "a.bin"'),
    );
  });
});

describe('describeFingerprintMismatch', () => {
  const base: BaseModelFingerprint = {
    architecture: 'gpt2',
    model_type: 'gpt2',
    hidden_size: 768,
    num_layers: 12,
    num_heads: 12,
    num_key_value_heads: 12,
    head_dim: 64,
    vocab_size: 50257,
    weights_sha256: 'a'.repeat(64),
  };

  it('returns null for equal fingerprints', () => {
    assert.equal(describeFingerprintMismatch(base, { ...base }), null);
  });

  it('names each differing field with both values', () => {
    const other = { ...base, hidden_size: 64, weights_sha256: 'b'.repeat(64) };
    const message = describeFingerprintMismatch(base, other);
    assert.ok(message !== null);
    assert.ok(message.includes('hidden_size (expected 768, found 64)'), message);
    assert.ok(message.includes(`weights_sha256 (expected "${'a'.repeat(64)}", found "${'b'.repeat(64)}")`), message);
    assert.ok(!message.includes('num_layers'), message);
  });
});
