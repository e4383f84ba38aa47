/**
 * The `inducer` command line, run as a child process the way users and other tools run it.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(here, '../../src/cli.js');
const STORIES = path.resolve(here, '../../../../shared/models/stories260k');

async function inducer(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { maxBuffer: 1 << 24 });
    return { stdout, stderr, code: 0 };
  } catch (error) {
    const failure = error as { stdout: string; stderr: string; code: number };
    return { stdout: failure.stdout, stderr: failure.stderr, code: failure.code };
  }
}

/** Reads the greedy 60-token continuation from BOS out of the model folder's README. */
async function knownGreedyText(): Promise<string> {
  const readme = await readFile(path.join(STORIES, 'README.md'), 'utf8');
  const match = /produces exactly\n\n {4}(.+)\n/.exec(readme);
  assert.ok(match, 'README of stories260k should contain the indented greedy output');
  return match[1];
}

describe('inducer generate', () => {
  it('reproduces the known greedy output of stories260k', async () => {
    const result = await inducer('generate', '--model', STORIES, '--prompt', '', '--max-tokens', '60', '--temperature', '0');
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, `${await knownGreedyText()}\n`);
  });

  it('continues a prompt without repeating it', async () => {
    const full = await knownGreedyText();
    const prompt = 'Once upon a time, there was a little girl named Lily.';
    const result = await inducer('generate', '--model', STORIES, '--prompt', prompt, '--max-tokens', '10', '--temperature', '0');
    assert.equal(result.code, 0, result.stderr);
    assert.ok(full.startsWith(prompt + result.stdout.trimEnd()), `"${result.stdout}" should continue the known text`);
  });

  it('stops before a stop string', async () => {
    const result = await inducer('generate', '--model', STORIES, '--prompt', '', '--max-tokens', '60', '--temperature', '0', '--stop', ' park');
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'Once upon a time, there was a little girl named Lily. She loved to play outside in the\n');
  });

  it('gives equal samples for equal seeds', async () => {
    const args = ['generate', '--model', STORIES, '--prompt', 'Once', '--max-tokens', '20', '--temperature', '1', '--top-p', '0.9', '--seed', '7'];
    const first = await inducer(...args);
    const second = await inducer(...args);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout, second.stdout);
  });

  it('rejects a missing model folder', async () => {
    const result = await inducer('generate', '--model', '/nonexistent/model', '--prompt', 'x');
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /config\.json/);
  });

  it('rejects an out-of-range temperature', async () => {
    const result = await inducer('generate', '--model', STORIES, '--prompt', 'x', '--temperature', '-1');
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /--temperature/);
  });
});

describe('inducer score', () => {
  it('prints tokens and one logprob per next token', async () => {
    const text = 'Once upon a time, there was a little girl named Lily.';
    const result = await inducer('score', '--model', STORIES, '--text', text, '--json');
    assert.equal(result.code, 0, result.stderr);
    const parsed = JSON.parse(result.stdout) as { tokens: number[]; logprobs: number[] };
    assert.deepEqual(parsed.tokens, [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426]);
    assert.equal(parsed.logprobs.length, parsed.tokens.length - 1);
    for (const value of parsed.logprobs) assert.ok(value <= 0 && Number.isFinite(value), `logprob ${value}`);
  });
});

describe('inducer adapter init', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'cli-adapter-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes a module that generate and score accept', async () => {
    const out = path.join(dir, 'fresh');
    const init = await inducer('adapter', 'init', '--model', STORIES, '--out', out, '--key-rank', '4', '--value-rank', '6', '--lora-q-rank', '2', '--seed', '3');
    assert.equal(init.code, 0, init.stderr);
    const config = JSON.parse(await readFile(path.join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(config.method, 'inducer');
    assert.equal(config.key_rank, 4);
    assert.equal(config.value_rank, 6);
    assert.deepEqual(config.lora_q, { rank: 2, alpha: 4, bias: true });
    const generated = await inducer('generate', '--model', STORIES, '--adapter', out, '--prompt', '', '--max-tokens', '5', '--temperature', '0');
    assert.equal(generated.code, 0, generated.stderr);
  });

  it('zero-value module scores exactly as the base model', async () => {
    const out = path.join(dir, 'zero');
    const init = await inducer('adapter', 'init', '--model', STORIES, '--out', out, '--init', 'zero-value', '--lora-q-rank', '4');
    assert.equal(init.code, 0, init.stderr);
    const text = 'One day, she saw a big, red ball.';
    const base = JSON.parse((await inducer('score', '--model', STORIES, '--text', text, '--json')).stdout) as { logprobs: number[] };
    const tuned = JSON.parse((await inducer('score', '--model', STORIES, '--adapter', out, '--text', text, '--json')).stdout) as { logprobs: number[] };
    base.logprobs.forEach((value, i) => assert.ok(Math.abs(value - tuned.logprobs[i]) < 1e-6, `token ${i}: ${value} vs ${tuned.logprobs[i]}`));
  });

  it('replaces an existing folder only with --force', async () => {
    const out = path.join(dir, 'existing');
    assert.equal((await inducer('adapter', 'init', '--model', STORIES, '--out', out, '--seed', '1')).code, 0);
    const first = await readFile(path.join(out, 'adapter_model.safetensors'));
    const refused = await inducer('adapter', 'init', '--model', STORIES, '--out', out, '--seed', '2');
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /--force/);
    assert.deepEqual(await readFile(path.join(out, 'adapter_model.safetensors')), first);
    const forced = await inducer('adapter', 'init', '--model', STORIES, '--out', out, '--seed', '2', '--force');
    assert.equal(forced.code, 0, forced.stderr);
    assert.notDeepEqual(await readFile(path.join(out, 'adapter_model.safetensors')), first);
  });

  it('applies the module task stop strings', async () => {
    const out = path.join(dir, 'with-task');
    assert.equal((await inducer('adapter', 'init', '--model', STORIES, '--out', out, '--init', 'zero-value')).code, 0);
    const configFile = path.join(out, 'adapter_config.json');
    const config = JSON.parse(await readFile(configFile, 'utf8')) as Record<string, unknown>;
    config.task = { stop: [' park'] };
    await writeFile(configFile, JSON.stringify(config));
    const result = await inducer('generate', '--model', STORIES, '--adapter', out, '--prompt', '', '--max-tokens', '60', '--temperature', '0');
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'Once upon a time, there was a little girl named Lily. She loved to play outside in the\n');
  });

  it('rejects a module with NaN', async () => {
    const out = path.join(dir, 'nan');
    assert.equal((await inducer('adapter', 'init', '--model', STORIES, '--out', out)).code, 0);
    const file = path.join(out, 'adapter_model.safetensors');
    const bytes = await readFile(file);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    bytes.writeFloatLE(Number.NaN, 8 + headerLength);
    await writeFile(file, bytes);
    const result = await inducer('generate', '--model', STORIES, '--adapter', out, '--prompt', 'x', '--max-tokens', '2');
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /NaN|not finite|non-finite/i);
  });

  it('rejects a module made for another model', async () => {
    const out = path.join(dir, 'other');
    assert.equal((await inducer('adapter', 'init', '--model', STORIES, '--out', out)).code, 0);
    const configFile = path.join(out, 'adapter_config.json');
    const config = JSON.parse(await readFile(configFile, 'utf8')) as { base_model: { weights_sha256: string } };
    config.base_model.weights_sha256 = '0'.repeat(64);
    await writeFile(configFile, JSON.stringify(config));
    const result = await inducer('generate', '--model', STORIES, '--adapter', out, '--prompt', 'x', '--max-tokens', '2');
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /trained for/);
  });
});
