/**
 * Inference benchmark: prefill time and decode throughput at batch 1 and 8, with the zero module
 * and with a different module per row, for stories260k and a randomly initialised model of
 * GPT-2 small's size. Prints a Markdown table and the ratio of each module run to its zero-module
 * baseline measured in the same process.
 *
 *   npm run build && node dist/bench/inference.js [--models stories260k,gpt2-small] [--prompt 128] [--steps 32] [--repeats 3]
 */
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { GPT2_SMALL_CONFIG, randomWeights } from './random-weights.js';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { parseModelConfig, type ModelConfig } from '../src/model/config.js';
import type { HostTensor } from '../src/model/tensor.js';
import { Engine, type KvCache } from '../src/runtime/engine.js';
import type { SlotModule } from '../src/runtime/slot-table.js';
import { initInducerTensors, type InducerHyperParams } from '../src/tuning/inducer.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const STORIES = path.resolve(here, '../../../shared/models/stories260k');

/** The official code's `inducer-lora` setting: key rank 5, value rank 12, LoRA-Q rank 24. */
const MODULE_SETTINGS: InducerHyperParams = { keyRank: 5, valueRank: 12, loraQ: { rank: 24, alpha: 32, bias: true } };


function modules(config: ModelConfig, count: number): SlotModule[] {
  return Array.from({ length: count }, (_, i) => ({
    keyRank: MODULE_SETTINGS.keyRank,
    valueRank: MODULE_SETTINGS.valueRank,
    loraQ: MODULE_SETTINGS.loraQ,
    tensors: initInducerTensors(config, MODULE_SETTINGS, 'default', 100 + i),
  }));
}

interface Measurement {
  prefillMs: number;
  decodeTokensPerSecond: number;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function measure(engine: Engine, batch: number, rowModules: (SlotModule | null)[], promptLength: number, steps: number, repeats: number): Promise<Measurement> {
  const vocab = engine.config.vocabSize;
  const prefillTimes: number[] = [];
  const decodeRates: number[] = [];
  const slotIds = engine.slots.slotsFor(rowModules);
  for (let repeat = 0; repeat < repeats + 1; repeat++) {
    const inputIds = Array.from({ length: batch }, (_, r) => Array.from({ length: promptLength }, (_, i) => (r * 131 + i * 7 + 3) % vocab));
    const positions = inputIds.map((row) => row.map((_, i) => i));
    let mask = inputIds.map((row) => row.map(() => 1));
    let started = performance.now();
    let step = await engine.forward({ inputIds, positionIds: positions, attentionMask: mask, logitsIndices: inputIds.map((_, r) => r * promptLength + promptLength - 1), slotIds, past: null });
    const prefillMs = performance.now() - started;
    let cache: KvCache = step.present;
    started = performance.now();
    for (let s = 0; s < steps; s++) {
      mask = mask.map((row) => [...row, 1]);
      step = await engine.forward({
        inputIds: inputIds.map((_, r) => [(r + s * 17) % vocab]),
        positionIds: inputIds.map(() => [promptLength + s]),
        attentionMask: mask,
        logitsIndices: inputIds.map((_, r) => r),
        slotIds,
        past: cache,
      });
      cache = step.present;
    }
    const decodeSeconds = (performance.now() - started) / 1000;
    if (repeat === 0) continue; // warm-up
    prefillTimes.push(prefillMs);
    decodeRates.push((batch * steps) / decodeSeconds);
  }
  return { prefillMs: median(prefillTimes), decodeTokensPerSecond: median(decodeRates) };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      models: { type: 'string', default: 'stories260k,gpt2-small' },
      prompt: { type: 'string', default: '128' },
      steps: { type: 'string', default: '32' },
      repeats: { type: 'string', default: '3' },
    },
  });
  const promptLength = Number(values.prompt);
  const steps = Number(values.steps);
  const repeats = Number(values.repeats);
  console.log(`machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`);
  console.log(`prompt ${promptLength} tokens, ${steps} decode steps, median of ${repeats} runs after one warm-up; modules: key rank 5, value rank 12, LoRA-Q rank 24\n`);
  console.log('| model | batch | modules | prefill ms | decode tokens/s | prefill vs zero | decode vs zero |');
  console.log('|---|---|---|---|---|---|---|');
  for (const name of (values.models ?? '').split(',')) {
    let config: ModelConfig;
    let weights: ReadonlyMap<string, HostTensor>;
    if (name === 'stories260k') {
      const checkpoint = await loadCheckpoint(STORIES);
      config = checkpoint.config;
      weights = checkpoint.weights;
    } else if (name === 'gpt2-small') {
      config = parseModelConfig(GPT2_SMALL_CONFIG);
      weights = randomWeights(config, 1);
    } else {
      throw new Error(`unknown model "${name}"; use stories260k or gpt2-small`);
    }
    const engine = await Engine.create(config, weights, { slotCapacity: 8 });
    const pool = modules(config, 8);
    for (const batch of [1, 8]) {
      const zero = await measure(engine, batch, new Array<SlotModule | null>(batch).fill(null), promptLength, steps, repeats);
      const mixed = await measure(engine, batch, pool.slice(0, batch), promptLength, steps, repeats);
      const label = batch === 1 ? '1 module' : `${batch} different`;
      console.log(`| ${name} | ${batch} | zero | ${zero.prefillMs.toFixed(1)} | ${zero.decodeTokensPerSecond.toFixed(1)} | 1.00 | 1.00 |`);
      console.log(
        `| ${name} | ${batch} | ${label} | ${mixed.prefillMs.toFixed(1)} | ${mixed.decodeTokensPerSecond.toFixed(1)} | ${(mixed.prefillMs / zero.prefillMs).toFixed(2)} | ${(mixed.decodeTokensPerSecond / zero.decodeTokensPerSecond).toFixed(2)} |`,
      );
    }
    await engine.dispose();
  }
}

await main();
