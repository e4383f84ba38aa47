import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { floatTensor } from '../../src/model/tensor.js';
import { CheckpointError, readCheckpoint, writeCheckpoint, type TrainingCheckpoint } from '../../src/train/checkpoint.js';

const checkpoint: TrainingCheckpoint = {
  settings: { seed: 3, nested: { lr: 0.001 } },
  loop: {
    step: 7,
    epoch: 1,
    batchInEpoch: 2,
    targetTokensSeen: 70,
    tokensSeen: 140,
    trainSeconds: 1.5,
    pendingLosses: [0.25],
    lossCurve: [{ step: 6, loss: 0.5 }],
    evalCurve: [{ step: 5, loss: 0.75, perplexity: Math.exp(0.75) }],
    bestEval: { step: 5, loss: 0.75, perplexity: Math.exp(0.75) },
    evalsWithoutImprovement: 0,
  },
  params: new Map([['w', floatTensor([2, 2], Float32Array.from([0.1, -0.2, 0.3, 1e-30]))]]),
  optimizer: {
    stepCount: 7,
    firstMoments: new Map([['w', floatTensor([2, 2], Float32Array.from([1, 2, 3, 4]))]]),
    secondMoments: new Map([['w', floatTensor([2, 2], Float32Array.from([5, 6, 7, 8]))]]),
  },
  bestParams: new Map([['w', floatTensor([2, 2], Float32Array.from([9, 8, 7, 6]))]]),
};

describe('training checkpoints', () => {
  it('round-trip every field exactly', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'checkpoint-'));
    try {
      const target = path.join(dir, 'run-checkpoint');
      await writeCheckpoint(target, checkpoint);
      await writeCheckpoint(target, checkpoint); // replacing an existing checkpoint works too
      const read = await readCheckpoint(target);
      assert.deepEqual(read.settings, checkpoint.settings);
      assert.deepEqual(read.loop, checkpoint.loop);
      assert.deepEqual([...read.params.get('w')!.data], [...checkpoint.params.get('w')!.data]);
      assert.deepEqual(read.params.get('w')!.shape, [2, 2]);
      assert.equal(read.optimizer.stepCount, 7);
      assert.deepEqual([...read.optimizer.firstMoments.get('w')!.data], [1, 2, 3, 4]);
      assert.deepEqual([...read.optimizer.secondMoments.get('w')!.data], [5, 6, 7, 8]);
      assert.deepEqual([...read.bestParams!.get('w')!.data], [9, 8, 7, 6]);
      assert.deepEqual(await readdir(dir), ['run-checkpoint'], 'no temporary folders remain');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('rejects a folder that is not a checkpoint', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'checkpoint-'));
    try {
      await assert.rejects(readCheckpoint(dir), (error: unknown) => error instanceof CheckpointError && /not a training checkpoint/.test(error.message));
      await writeFile(path.join(dir, 'trainer_state.json'), '{"format_version": 99}');
      await assert.rejects(readCheckpoint(dir), /not a version 1 training checkpoint/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
