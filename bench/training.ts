/**
 * Training benchmark: target tokens per second of TrainingSession.step (forward and backward,
 * dropout 0.1, label smoothing 0.1) and of evaluate (forward only). The batch has 8 rows of 64
 * tokens. Models are stories260k and a randomly initialised model of GPT-2 small's size. Each
 * measurement runs one warm-up call, then repeats calls until `--seconds` have passed or
 * `--max-steps` calls have run, and reports the mean rate.
 *
 *   npx tsc -p . && node dist/bench/training.js [--models stories260k,gpt2-small] [--seconds 20] [--max-steps 20]
 */
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { GPT2_SMALL_CONFIG, randomWeights } from './random-weights.js';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { parseModelConfig, type ModelConfig } from '../src/model/config.js';
import type { HostTensor } from '../src/model/tensor.js';
import { TrainingSession, type TrainingBatch } from '../src/train/training-session.js';
import { initInducerTensors, type InducerHyperParams } from '../src/tuning/inducer.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const STORIES = path.resolve(here, '../../../shared/models/stories260k');

/** The official code's `inducer-lora` setting: key rank 5, value rank 12, LoRA-Q rank 24. */
const MODULE_SETTINGS: InducerHyperParams = { keyRank: 5, valueRank: 12, loraQ: { rank: 24, alpha: 32, bias: true } };

const BATCH_SIZE = 8;
const SEQ_LENGTH = 64;


/** Full rows of pseudo-random tokens; every position but the last has the next token as its label. */
function makeBatch(vocabSize: number): TrainingBatch {
  const inputIds = Array.from({ length: BATCH_SIZE }, (_, r) => Array.from({ length: SEQ_LENGTH }, (_, t) => (r * 131 + t * 7 + 3) % vocabSize));
  return {
    inputIds,
    attentionMask: inputIds.map((row) => row.map(() => 1)),
    labels: inputIds.map((row) => row.map((_, t) => (t + 1 < row.length ? row[t + 1] : -100))),
  };
}

/** Runs `call` once to warm up, then until `seconds` pass or `maxSteps` calls ran; returns calls per second. */
async function rate(call: () => Promise<unknown>, seconds: number, maxSteps: number): Promise<{ perSecond: number; steps: number }> {
  await call();
  const started = performance.now();
  let steps = 0;
  while (steps < maxSteps && (performance.now() - started) / 1000 < seconds) {
    await call();
    steps += 1;
  }
  return { perSecond: steps / ((performance.now() - started) / 1000), steps };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      models: { type: 'string', default: 'stories260k,gpt2-small' },
      seconds: { type: 'string', default: '20' },
      'max-steps': { type: 'string', default: '20' },
    },
  });
  const seconds = Number(values.seconds);
  const maxSteps = Number(values['max-steps']);
  console.log(`machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`);
  console.log(`batch ${BATCH_SIZE} x ${SEQ_LENGTH} tokens (${BATCH_SIZE * (SEQ_LENGTH - 1)} target tokens); module: key rank 5, value rank 12, LoRA-Q rank 24; dropout 0.1, label smoothing 0.1\n`);
  console.log('| model | session load s | step (fwd+bwd) s | train target tokens/s | evaluate (fwd) s | eval target tokens/s | steps timed |');
  console.log('|---|---|---|---|---|---|---|');
  for (const name of (values.models ?? '').split(',')) {
    let config: ModelConfig;
    let weights: ReadonlyMap<string, HostTensor>;
    if (name === 'stories260k') {
      ({ config, weights } = await loadCheckpoint(STORIES));
    } else if (name === 'gpt2-small') {
      config = parseModelConfig(GPT2_SMALL_CONFIG);
      weights = randomWeights(config, 1);
    } else {
      throw new Error(`unknown model "${name}"; use stories260k or gpt2-small`);
    }
    const loadStarted = performance.now();
    const session = await TrainingSession.create(config, weights, MODULE_SETTINGS, { labelSmoothing: 0.1, dropout: 0.1 });
    const loadSeconds = (performance.now() - loadStarted) / 1000;
    const params = initInducerTensors(config, MODULE_SETTINGS, 'default', 1);
    const batch = makeBatch(config.vocabSize);
    const targets = BATCH_SIZE * (SEQ_LENGTH - 1);
    let seed = 0;
    const train = await rate(() => session.step(batch, params, seed++), seconds, maxSteps);
    const evaluate = await rate(() => session.evaluate(batch, params), seconds, maxSteps);
    await session.dispose();
    console.log(
      `| ${name} | ${loadSeconds.toFixed(1)} | ${(1 / train.perSecond).toFixed(3)} | ${(train.perSecond * targets).toFixed(0)} | ${(1 / evaluate.perSecond).toFixed(3)} | ${(evaluate.perSecond * targets).toFixed(0)} | ${train.steps} / ${evaluate.steps} |`,
    );
  }
}

await main();
