import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createProgressReporter, formatDuration, formatStepLine } from '../../src/train/progress.js';
import type { StepReport } from '../../src/train/loop.js';

const report: StepReport = {
  step: 10,
  totalSteps: 40,
  epoch: 0,
  loss: 2.345678,
  learningRate: 0.00125,
  tokens: 300,
  targetTokens: 120,
  gradientNorm: 1.5,
  tokensPerSecond: 1234.4,
};

describe('progress output', () => {
  it('formats durations', () => {
    assert.equal(formatDuration(42.4), '42s');
    assert.equal(formatDuration(185), '3m05s');
    assert.equal(formatDuration(3720), '1h02m');
    assert.equal(formatDuration(Number.NaN), '?');
  });

  it('formats a step line with the remaining time', () => {
    // 10 steps took 20 s, so the remaining 30 steps take about 60 s.
    assert.equal(
      formatStepLine(report, 20, 10),
      'step 10/40 epoch 1 loss 2.3457 lr 1.250e-3 grad-norm 1.500 1234 tokens/s eta 1m00s',
    );
  });

  it('prints plain lines every logEvery steps and at the end', () => {
    const lines: string[] = [];
    const stream = { write: (text: string) => lines.push(text) > 0 } as unknown as NodeJS.WritableStream;
    const progress = createProgressReporter({ stream, interactive: false, logEvery: 5 });
    progress.start(12, 0);
    for (let step = 1; step <= 12; step++) progress.step({ ...report, step, totalSteps: 12 });
    progress.message('eval done');
    progress.stop();
    assert.deepEqual(lines.map((line) => line.split(' ')[0] === 'step' ? line.split(' ')[1] : line), ['5/12', '10/12', '12/12', 'eval done\n']);
  });
});
