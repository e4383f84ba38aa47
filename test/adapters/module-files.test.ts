import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { parseAdapterConfig } from '../../src/adapters/adapter-config.js';
import { readModule, writeModule } from '../../src/adapters/module-files.js';
import {
  AdapterError,
  createInducerModule,
  createTuningModule,
  hyperParamsOf,
  validateModule,
  type AdapterErrorReason,
  type TuningModule,
} from '../../src/adapters/module.js';
import { parseModelConfig } from '../../src/model/config.js';
import type { BaseModelFingerprint } from '../../src/model/fingerprint.js';
import { readSafetensorsHeader, serializeSafetensors, type SafetensorsDType } from '../../src/model/safetensors.js';
import { floatTensor, type HostTensor } from '../../src/model/tensor.js';
import type { InducerHyperParams } from '../../src/tuning/inducer.js';

/** D = 16, H = 4, d = 4, L = 2. */
const model = parseModelConfig({ model_type: 'gpt2', n_embd: 16, n_layer: 2, n_head: 4, vocab_size: 50, n_positions: 32 });

const fingerprint: BaseModelFingerprint = {
  architecture: 'gpt2',
  model_type: 'gpt2',
  hidden_size: 16,
  num_layers: 2,
  num_heads: 4,
  num_key_value_heads: 4,
  head_dim: 4,
  vocab_size: 50,
  weights_sha256: '0123456789abcdef'.repeat(4),
};

const hp: InducerHyperParams = { keyRank: 3, valueRank: 5, loraQ: { rank: 2, alpha: 4, bias: true } };

/** Per layer: key 48 + 12 + 48 + 16, value 80 + 20 + 320 + 16, LoRA-Q 32 + 32 + 16 = 640 values. */
const NUM_VALUES = 2 * 640;

function newModule(seed = 7): TuningModule {
  return createInducerModule(model, fingerprint, hp, {
    init: 'default',
    seed,
    task: { description: 'test task', prompt_template: 'Q: {prompt}\nA:', stop: ['\n'] },
  });
}

/** Asserts that `promise` rejects with an AdapterError of `reason` whose message contains every fragment. */
async function assertAdapterError(promise: Promise<unknown>, reason: AdapterErrorReason, fragments: string[]): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof AdapterError, `expected AdapterError, got ${String(error)}`);
    for (const fragment of fragments) assert.ok(error.message.includes(fragment), `"${fragment}" not in: ${error.message}`);
    assert.equal(error.reason, reason, error.message);
    return true;
  });
}

describe('module files', () => {
  let root: string;
  let caseNumber = 0;
  /** Returns a fresh folder path inside the test root (not created). */
  const nextDir = (): string => path.join(root, `case-${++caseNumber}`);

  /** Writes a module folder byte by byte, bypassing writeModule's checks. */
  async function writeRawModule(
    config: unknown,
    tensors: ReadonlyMap<string, HostTensor>,
    dtype: SafetensorsDType = 'F32',
  ): Promise<string> {
    const dir = nextDir();
    await mkdir(dir);
    await writeFile(path.join(dir, 'adapter_config.json'), typeof config === 'string' ? config : JSON.stringify(config));
    await writeFile(path.join(dir, 'adapter_model.safetensors'), serializeSafetensors(tensors, {}, dtype));
    return dir;
  }

  /** Copies the module's tensors with `name` replaced (or removed when `tensor` is null). */
  function withTensor(module: TuningModule, name: string, tensor: HostTensor | null): Map<string, HostTensor> {
    const tensors = new Map(module.tensors);
    if (tensor === null) tensors.delete(name);
    else tensors.set(name, tensor);
    return tensors;
  }

  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'module-files-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  describe('round trip', () => {
    it('reads back an F32 module exactly', async () => {
      const module = newModule();
      const dir = nextDir();
      await writeModule(dir, module);
      const read = await readModule(dir, { model, fingerprint });
      assert.deepEqual(read.config, module.config);
      assert.deepEqual([...read.tensors.keys()], [...module.tensors.keys()]);
      for (const [name, tensor] of module.tensors) {
        assert.deepEqual(read.tensors.get(name)?.shape, tensor.shape, name);
        assert.deepEqual(read.tensors.get(name)?.data, tensor.data, name);
      }
      assert.equal(read.sizeBytes, NUM_VALUES * 4);
      assert.equal(module.sizeBytes, NUM_VALUES * 4);
    });

    it('writes exactly the two files', async () => {
      const dir = nextDir();
      await writeModule(dir, newModule());
      assert.deepEqual((await readdir(dir)).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
      const config = JSON.parse(await readFile(path.join(dir, 'adapter_config.json'), 'utf8'));
      assert.equal(config.format_version, 1);
      assert.equal(config.method, 'inducer');
      assert.equal(config.key_rank, 3);
      assert.equal(config.value_rank, 5);
      assert.deepEqual(config.lora_q, { rank: 2, alpha: 4, bias: true });
      assert.deepEqual(config.base_model, fingerprint);
      assert.equal(config.task.prompt_template, 'Q: {prompt}\nA:');
      const header = readSafetensorsHeader(await readFile(path.join(dir, 'adapter_model.safetensors')));
      assert.equal(header.size, 2 * 11);
      for (const entry of header.values()) assert.equal(entry.dtype, 'F32');
    });

    it('keeps F16 values within half precision', async () => {
      const module = newModule();
      const dir = nextDir();
      await writeModule(dir, module, { dtype: 'F16' });
      const header = readSafetensorsHeader(await readFile(path.join(dir, 'adapter_model.safetensors')));
      for (const entry of header.values()) assert.equal(entry.dtype, 'F16');

      const read = await readModule(dir, { model, fingerprint });
      let numChanged = 0;
      for (const [name, tensor] of module.tensors) {
        const roundTripped = read.tensors.get(name)?.data ?? new Float32Array();
        for (let i = 0; i < tensor.data.length; i++) {
          const original = tensor.data[i];
          // Half precision: relative rounding error 2^-11 for normal values, absolute 2^-25 below 2^-14.
          const tolerance = Math.max(Math.abs(original) * 2 ** -11, 2 ** -25);
          assert.ok(Math.abs(roundTripped[i] - original) <= tolerance, `${name}[${i}]: ${original} -> ${roundTripped[i]}`);
          if (roundTripped[i] !== original) numChanged++;
        }
      }
      assert.ok(numChanged > NUM_VALUES / 2, 'F16 storage should round most float32 values');
    });

    it('replaces an existing module folder', async () => {
      const parent = nextDir();
      const dir = path.join(parent, 'module');
      await writeModule(dir, newModule(1));
      const second = newModule(2);
      await writeModule(dir, second);
      const read = await readModule(dir);
      assert.deepEqual(read.tensors.get('layers.1.inducer.value.up.weight')?.data, second.tensors.get('layers.1.inducer.value.up.weight')?.data);
      assert.deepEqual(await readdir(parent), ['module'], 'no staging or old folder left behind');
    });

    it('creates missing parent folders', async () => {
      const dir = path.join(nextDir(), 'a', 'b');
      await writeModule(dir, newModule());
      await readModule(dir);
    });

    it('validates without expected model from base_model', async () => {
      const module = newModule();
      const dir = await writeRawModule(module.config, withTensor(module, 'layers.0.inducer.value.up.bias', floatTensor([15])));
      await assertAdapterError(readModule(dir), 'invalid', ['layers.0.inducer.value.up.bias', '[16]', '[15]']);
    });
  });

  describe('read errors', () => {
    it('rejects a missing folder', async () => {
      const dir = nextDir();
      await assertAdapterError(readModule(dir), 'not_found', [dir, 'not found']);
    });

    it('rejects a missing adapter_config.json', async () => {
      const dir = nextDir();
      await mkdir(dir);
      await assertAdapterError(readModule(dir), 'not_found', [path.join(dir, 'adapter_config.json'), 'missing file']);
    });

    it('rejects a missing adapter_model.safetensors', async () => {
      const dir = nextDir();
      await writeModule(dir, newModule());
      await rm(path.join(dir, 'adapter_model.safetensors'));
      await assertAdapterError(readModule(dir), 'not_found', [path.join(dir, 'adapter_model.safetensors'), 'missing file']);
    });

    it('rejects invalid JSON', async () => {
      const module = newModule();
      const dir = await writeRawModule('{"method": "inducer",', module.tensors);
      await assertAdapterError(readModule(dir), 'invalid', [path.join(dir, 'adapter_config.json'), 'not valid JSON']);
    });

    const schemaCases: { name: string; change: (config: Record<string, unknown>) => void; fragments: string[] }[] = [
      { name: 'negative key_rank', change: (c) => (c.key_rank = -1), fragments: ['key_rank:'] },
      { name: 'fractional value_rank', change: (c) => (c.value_rank = 2.5), fragments: ['value_rank:'] },
      { name: 'missing lora_q', change: (c) => delete c.lora_q, fragments: ['lora_q:'] },
      { name: 'zero LoRA alpha', change: (c) => (c.lora_q = { rank: 2, alpha: 0, bias: true }), fragments: ['lora_q.alpha:'] },
      { name: 'unknown top-level field', change: (c) => (c.learning_rate = 0.1), fragments: ['learning_rate'] },
      { name: 'short weights hash', change: (c) => ((c.base_model as Record<string, unknown>).weights_sha256 = 'abc'), fragments: ['base_model.weights_sha256:'] },
      { name: 'template without {prompt}', change: (c) => (c.task = { prompt_template: 'Q: A:' }), fragments: ['task.prompt_template:', '{prompt}'] },
      { name: 'empty stop string', change: (c) => (c.task = { stop: ['x', ''] }), fragments: ['task.stop.1:'] },
      { name: 'invalid created_at', change: (c) => (c.created_at = 'yesterday'), fragments: ['created_at:'] },
      { name: 'format_version 2', change: (c) => (c.format_version = 2), fragments: ['format_version:'] },
      { name: 'unsupported method', change: (c) => (c.method = 'ia3'), fragments: ['method "ia3" is not supported'] },
    ];
    for (const { name, change, fragments } of schemaCases) {
      it(`rejects config with ${name}`, async () => {
        const module = newModule();
        const config = structuredClone(module.config) as Record<string, unknown>;
        change(config);
        const dir = await writeRawModule(config, module.tensors);
        await assertAdapterError(readModule(dir), 'invalid', [path.join(dir, 'adapter_config.json'), ...fragments]);
      });
    }

    it('rejects a truncated safetensors file', async () => {
      const dir = nextDir();
      await writeModule(dir, newModule());
      const file = path.join(dir, 'adapter_model.safetensors');
      const size = (await readFile(file)).byteLength;
      await truncate(file, size - 100);
      await assertAdapterError(readModule(dir), 'invalid', [file, 'truncated']);
    });

    it('rejects a corrupt safetensors header', async () => {
      const dir = nextDir();
      await writeModule(dir, newModule());
      const file = path.join(dir, 'adapter_model.safetensors');
      const bytes = await readFile(file);
      bytes.fill(0xff, 8, 16);
      await writeFile(file, bytes);
      await assertAdapterError(readModule(dir), 'invalid', [file, 'header is not valid JSON']);
    });

    it('rejects BF16 tensors', async () => {
      const module = newModule();
      const dir = await writeRawModule(module.config, module.tensors, 'BF16');
      await assertAdapterError(readModule(dir), 'invalid', ['layers.0.inducer.key.down.weight', 'BF16', 'F32 or F16']);
    });

    it('rejects a tensor with the wrong shape', async () => {
      const module = newModule();
      const name = 'layers.1.inducer.value.up.weight';
      const dir = await writeRawModule(module.config, withTensor(module, name, floatTensor([4, 16, 5])));
      await assertAdapterError(readModule(dir, { model, fingerprint }), 'invalid', [
        path.join(dir, 'adapter_model.safetensors'),
        `tensor ${name} has shape [4, 16, 5] but [4, 5, 16] was expected`,
      ]);
    });

    it('rejects a missing tensor', async () => {
      const module = newModule();
      const dir = await writeRawModule(module.config, withTensor(module, 'layers.1.lora_q.bias', null));
      await assertAdapterError(readModule(dir, { model, fingerprint }), 'invalid', ['missing', 'layers.1.lora_q.bias', '[16]']);
    });

    it('rejects an unexpected tensor', async () => {
      const module = newModule();
      const dir = await writeRawModule(module.config, withTensor(module, 'layers.2.lora_q.A', floatTensor([2, 16])));
      await assertAdapterError(readModule(dir, { model, fingerprint }), 'invalid', ['unexpected', 'layers.2.lora_q.A']);
    });

    it('rejects key tensors when key_rank is 1', async () => {
      const module = newModule();
      const config = { ...module.config, key_rank: 1 };
      const dir = await writeRawModule(config, module.tensors);
      await assertAdapterError(readModule(dir, { model, fingerprint }), 'invalid', ['unexpected', 'layers.0.inducer.key.down.weight']);
    });

    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      it(`rejects ${bad} with tensor and index`, async () => {
        const module = newModule();
        const name = 'layers.1.inducer.key.up.weight';
        const values = Float32Array.from(module.tensors.get(name)?.data ?? []);
        // Flat index 29 of shape [4, 3, 4] is [2, 1, 1] (29 = 2*12 + 1*4 + 1).
        values[29] = bad;
        values[40] = bad;
        const dir = await writeRawModule(module.config, withTensor(module, name, floatTensor([4, 3, 4], values)));
        await assertAdapterError(readModule(dir), 'invalid', [name, `${bad} at index [2, 1, 1] (flat index 29)`]);
      });
    }

    it('rejects a module for another base model', async () => {
      const dir = nextDir();
      await writeModule(dir, newModule());
      const served = { ...fingerprint, weights_sha256: 'f'.repeat(64) };
      await assertAdapterError(readModule(dir, { model, fingerprint: served }), 'incompatible', [
        path.join(dir, 'adapter_config.json'),
        'module was trained for base model gpt2 with weights sha256 0123456789ab',
        'but the server runs gpt2 with weights sha256 ffffffffffff',
        `weights_sha256 (expected "${fingerprint.weights_sha256}", found "${'f'.repeat(64)}")`,
      ]);
    });
  });

  describe('write errors', () => {
    it('fails cleanly when the parent is a file', async () => {
      const holder = nextDir();
      await mkdir(holder);
      const blocker = path.join(holder, 'file');
      await writeFile(blocker, 'not a folder');
      const dir = path.join(blocker, 'module');
      await assertAdapterError(writeModule(dir, newModule()), 'io', [`failed to write module to ${dir}`]);
      assert.deepEqual(await readdir(holder), ['file'], 'no partial folder next to the blocking file');
      assert.equal(await readFile(blocker, 'utf8'), 'not a folder');
    });

    it('refuses to replace a folder that is not a module', async () => {
      const dir = nextDir();
      await mkdir(dir);
      await writeFile(path.join(dir, 'notes.txt'), 'keep me');
      await assertAdapterError(writeModule(dir, newModule()), 'io', [dir, 'not a module folder']);
      assert.deepEqual(await readdir(dir), ['notes.txt']);
      assert.deepEqual(await readdir(path.dirname(dir)).then((names) => names.filter((n) => n.startsWith('.'))), []);
    });

    it('refuses to replace a file', async () => {
      const dir = nextDir();
      await writeFile(dir, 'a file');
      await assertAdapterError(writeModule(dir, newModule()), 'io', [dir, 'not a folder']);
      assert.equal(await readFile(dir, 'utf8'), 'a file');
    });

    it('rejects a module with NaN before writing', async () => {
      const module = newModule();
      const name = 'layers.0.inducer.value.down.bias';
      const values = Float32Array.from(module.tensors.get(name)?.data ?? []);
      values[3] = Number.NaN;
      const broken = createTuningModule(module.config, withTensor(module, name, floatTensor([4, 5], values)));
      const dir = nextDir();
      await assertAdapterError(writeModule(dir, broken), 'invalid', [name, 'flat index 3']);
      await assert.rejects(readdir(dir), { code: 'ENOENT' });
    });

    it('rejects values beyond the float16 range', async () => {
      const module = newModule();
      const name = 'layers.0.inducer.value.up.bias';
      const values = new Float32Array(16);
      values[5] = 70000;
      const large = createTuningModule(module.config, withTensor(module, name, floatTensor([16], values)));
      const dir = nextDir();
      await assertAdapterError(writeModule(dir, large, { dtype: 'F16' }), 'invalid', [name, 'float16', 'F32']);
      await writeModule(dir, large, { dtype: 'F32' });
      assert.equal((await readModule(dir)).tensors.get(name)?.data[5], 70000);
    });
  });
});

describe('createInducerModule', () => {
  it('records hyper-parameters and base model', () => {
    const module = newModule();
    assert.deepEqual(hyperParamsOf(module.config), hp);
    assert.deepEqual(module.config.base_model, fingerprint);
    assert.equal(module.config.method, 'inducer');
    assert.ok(!Number.isNaN(Date.parse(module.config.created_at ?? '')));
    validateModule(module, model, fingerprint);
  });

  it('rejects a prompt template without {prompt}', () => {
    assert.throws(
      () => createInducerModule(model, fingerprint, hp, { init: 'default', seed: 1, task: { prompt_template: 'no placeholder' } }),
      (error: unknown) => error instanceof AdapterError && error.message.includes('task.prompt_template'),
    );
  });

  it('rejects invalid hyper-parameters', () => {
    assert.throws(
      () => createInducerModule(model, fingerprint, { ...hp, valueRank: 0 }, { init: 'default', seed: 1 }),
      (error: unknown) => error instanceof AdapterError && error.message.includes('valueRank'),
    );
  });
});

describe('validateModule', () => {
  it('rejects a model with other dimensions', () => {
    const module = newModule();
    const wider = parseModelConfig({ model_type: 'gpt2', n_embd: 32, n_layer: 2, n_head: 4, vocab_size: 50, n_positions: 32 });
    const widerFingerprint = { ...fingerprint, hidden_size: 32, head_dim: 8 };
    assert.throws(
      () => validateModule(module, wider, widerFingerprint),
      (error: unknown) =>
        error instanceof AdapterError &&
        error.reason === 'incompatible' &&
        error.message.includes('hidden_size (expected 16, found 32)') &&
        error.message.includes('head_dim (expected 4, found 8)'),
    );
  });
});

describe('parseAdapterConfig', () => {
  it('rejects a non-object', () => {
    assert.throws(() => parseAdapterConfig([1], 'x.json'), /x\.json: expected a JSON object, found an array/);
  });

  it('accepts a minimal config', () => {
    const config = parseAdapterConfig(
      { format_version: 1, method: 'inducer', key_rank: 0, value_rank: 1, lora_q: null, base_model: fingerprint },
      'x.json',
    );
    assert.equal(config.task, undefined);
    assert.equal(config.lora_q, null);
  });
});
