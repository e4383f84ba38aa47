/**
 * `inducer train --method prefix|lora`, `inducer adapter init --method` and
 * `inducer generate --adapter` with the real ONNX sessions on stories260k and CMUdict data, run as
 * child processes the way users run them.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(here, '../../src/cli.js');
const PREPARE = path.resolve(here, '../../examples/cmudict/prepare.js');
const STORIES = path.resolve(here, '../../../../shared/models/stories260k');
const STEPS = 20;

let dir: string;

async function generate(adapter: string | null, prompt: string): Promise<string> {
  const args = [CLI, 'generate', '--model', STORIES, '--prompt', prompt, '--max-tokens', '12', '--temperature', '0'];
  if (adapter !== null) args.push('--adapter', adapter);
  return (await run(process.execPath, args)).stdout;
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'baseline-e2e-'));
  await run(process.execPath, [PREPARE, '--out', dir, '--train', '200', '--eval', '40']);
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

// Measured on 2026-12-04 with these options: prefix 9.66 -> 8.63, lora 9.02 -> 3.49 eval loss.
const METHODS = [
  { method: 'prefix', flags: ['--prefix-length', '10'], minDrop: 0.3 },
  { method: 'lora', flags: ['--lora-rank', '8'], minDrop: 2 },
];

for (const { method, flags, minDrop } of METHODS) {
  describe(`inducer train --method ${method} on stories260k`, () => {
    const out = (): string => path.join(dir, method);

    it('lowers the eval loss and writes the method config', async () => {
      await run(
        process.execPath,
        [CLI, 'train', '--model', STORIES, '--data', path.join(dir, 'train.jsonl'), '--eval', path.join(dir, 'eval.jsonl'),
          '--out', out(), '--method', method, ...flags, '--max-steps', String(STEPS), '--eval-every', '10', '--lr', '1e-2'],
        { maxBuffer: 1 << 24 },
      );
      const report = JSON.parse(await readFile(path.join(out(), 'training_report.json'), 'utf8'));
      assert.ok(report.best_eval.loss < report.initial_eval.loss - minDrop, `eval loss ${report.initial_eval.loss} -> ${report.best_eval.loss}`);
      assert.equal(report.progress.steps, STEPS);
      assert.equal(report.hyper_parameters.method, method);
      const config = JSON.parse(await readFile(path.join(out(), 'adapter_config.json'), 'utf8'));
      assert.equal(config.method, method);
      if (method === 'prefix') assert.equal(config.prefix_length, 10);
      else assert.deepEqual([config.rank, config.alpha, config.target_modules], [8, 16, ['q', 'v']]);
    });

    it('loads in inducer generate --adapter', async () => {
      const text = await generate(out(), 'word: cat\nphonemes:');
      assert.equal(typeof text, 'string');
      if (method === 'lora') {
        // 20 steps on pronunciations move LoRA far from the story model's greedy continuation.
        assert.notEqual(text, await generate(null, 'word: cat\nphonemes:'));
      }
    });
  });
}

describe('inducer adapter init --method', () => {
  it('writes a fresh LoRA module that generates as the frozen model', async () => {
    const out = path.join(dir, 'fresh-lora');
    await run(process.execPath, [CLI, 'adapter', 'init', '--model', STORIES, '--out', out, '--method', 'lora', '--lora-rank', '4']);
    const config = JSON.parse(await readFile(path.join(out, 'adapter_config.json'), 'utf8'));
    assert.deepEqual([config.method, config.rank, config.alpha], ['lora', 4, 8]);
    assert.equal(await generate(out, 'Once upon'), await generate(null, 'Once upon'));
  });

  it('writes a prefix module', async () => {
    const out = path.join(dir, 'fresh-prefix');
    await run(process.execPath, [CLI, 'adapter', 'init', '--model', STORIES, '--out', out, '--method', 'prefix', '--prefix-length', '5']);
    const config = JSON.parse(await readFile(path.join(out, 'adapter_config.json'), 'utf8'));
    assert.deepEqual([config.method, config.prefix_length], ['prefix', 5]);
    assert.ok((await generate(out, 'Once upon')).length > 0, 'generation with the prefix module printed nothing');
  });
});
