import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { learningRateAt, validateSchedule, ScheduleError, type ScheduleSettings } from '../../src/train/schedule.js';

const linear: ScheduleSettings = { kind: 'linear', peakLearningRate: 1, warmupSteps: 4, totalSteps: 12 };

describe('learningRateAt', () => {
  it('warms up linearly from 0', () => {
    assert.equal(learningRateAt(0, linear), 0);
    assert.equal(learningRateAt(1, linear), 0.25);
    assert.equal(learningRateAt(3, linear), 0.75);
  });

  it('decays linearly to 0 after warm-up', () => {
    assert.equal(learningRateAt(4, linear), 1);
    assert.equal(learningRateAt(8, linear), 0.5); // (12 - 8) / (12 - 4)
    assert.equal(learningRateAt(12, linear), 0);
    assert.equal(learningRateAt(20, linear), 0);
  });

  it('follows a half cosine after warm-up', () => {
    const cosine: ScheduleSettings = { ...linear, kind: 'cosine' };
    assert.equal(learningRateAt(4, cosine), 1);
    assert.ok(Math.abs(learningRateAt(8, cosine) - 0.5) < 1e-12, 'half way the cosine is at 0.5');
    assert.ok(Math.abs(learningRateAt(6, cosine) - (0.5 + 0.5 * Math.SQRT1_2)) < 1e-12, 'a quarter of the way: ½(1 + cos(π/4))');
    assert.ok(Math.abs(learningRateAt(12, cosine)) < 1e-12);
  });

  it('stays constant after warm-up', () => {
    const constant: ScheduleSettings = { ...linear, kind: 'constant', peakLearningRate: 2e-3 };
    assert.equal(learningRateAt(2, constant), 1e-3);
    assert.equal(learningRateAt(4, constant), 2e-3);
    assert.equal(learningRateAt(100, constant), 2e-3);
  });

  it('starts at the peak without warm-up', () => {
    assert.equal(learningRateAt(0, { ...linear, warmupSteps: 0 }), 1);
    assert.equal(learningRateAt(6, { ...linear, warmupSteps: 0 }), 0.5);
  });
});

describe('validateSchedule', () => {
  it('rejects invalid settings', () => {
    assert.throws(() => validateSchedule({ ...linear, totalSteps: 0 }), ScheduleError);
    assert.throws(() => validateSchedule({ ...linear, warmupSteps: -1 }), ScheduleError);
    assert.throws(() => validateSchedule({ ...linear, peakLearningRate: Number.NaN }), ScheduleError);
    assert.throws(() => validateSchedule({ ...linear, kind: 'step' as never }), /expected one of linear, cosine, constant/);
  });
});
