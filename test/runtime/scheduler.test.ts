import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { QueueFullError } from '../../src/runtime/backend.js';
import { DuplicateJobError, Scheduler, SchedulerLimitsError, type SchedulableJob, type SchedulerLimits } from '../../src/runtime/scheduler.js';

const WIDE: SchedulerLimits = { maxBatchSize: 8, maxBatchTokens: 10_000, maxModules: 8, maxQueue: 100 };

function job(id: string, tenant: string, numPromptTokens = 4, moduleKey: string | null = null): SchedulableJob {
  return { id, tenant, moduleKey, numPromptTokens };
}

function ids(jobs: readonly SchedulableJob[]): string[] {
  return jobs.map((j) => j.id);
}

describe('Scheduler', () => {
  it('admits one tenant in arrival order up to the batch size', () => {
    const scheduler = new Scheduler({ ...WIDE, maxBatchSize: 2 });
    for (const id of ['a1', 'a2', 'a3']) scheduler.enqueue(job(id, 'a'));
    assert.deepEqual(ids(scheduler.admit()), ['a1', 'a2']);
    assert.equal(scheduler.numRunning, 2);
    assert.equal(scheduler.numWaiting, 1);
    assert.deepEqual(ids(scheduler.admit()), [], 'the running set is full');
    assert.equal(scheduler.finish('a1'), true);
    assert.deepEqual(ids(scheduler.admit()), ['a3']);
  });

  it('takes turns between tenants', () => {
    const scheduler = new Scheduler({ ...WIDE, maxBatchSize: 3 });
    for (const id of ['a1', 'a2', 'a3', 'a4']) scheduler.enqueue(job(id, 'a'));
    for (const id of ['b1', 'b2']) scheduler.enqueue(job(id, 'b'));
    // Ring a, b: a1 moves a to the back, then b1, then a2.
    assert.deepEqual(ids(scheduler.admit()), ['a1', 'b1', 'a2']);
    for (const id of ['a1', 'b1', 'a2']) scheduler.finish(id);
    // b was served less recently than a, so it goes first; b then has nothing left.
    assert.deepEqual(ids(scheduler.admit()), ['b2', 'a3', 'a4']);
  });

  it('queues an arriving tenant behind active ones', () => {
    const scheduler = new Scheduler({ ...WIDE, maxBatchSize: 1 });
    for (const id of ['a1', 'a2', 'a3']) scheduler.enqueue(job(id, 'a'));
    assert.deepEqual(ids(scheduler.admit()), ['a1']);
    scheduler.enqueue(job('b1', 'b'));
    scheduler.finish('a1');
    // As in deficit round-robin, a new tenant joins at the back of the turn order.
    assert.deepEqual(ids(scheduler.admit()), ['a2']);
    scheduler.finish('a2');
    assert.deepEqual(ids(scheduler.admit()), ['b1'], 'b gets its turn before a3');
    scheduler.finish('b1');
    assert.deepEqual(ids(scheduler.admit()), ['a3']);
  });

  it('keeps the padded prefill within the token budget', () => {
    const scheduler = new Scheduler({ ...WIDE, maxBatchTokens: 10 });
    for (const id of ['a1', 'a2', 'a3']) scheduler.enqueue(job(id, 'a', 4));
    // 1 * 4 = 4, 2 * 4 = 8, 3 * 4 = 12 > 10.
    assert.deepEqual(ids(scheduler.admit()), ['a1', 'a2']);
    assert.deepEqual(ids(scheduler.admit()), ['a3'], 'the budget is per call');
  });

  it('counts padding to the longest prompt in the budget', () => {
    const scheduler = new Scheduler({ ...WIDE, maxBatchTokens: 8 });
    scheduler.enqueue(job('a1', 'a', 2));
    scheduler.enqueue(job('a2', 'a', 8));
    scheduler.enqueue(job('b1', 'b', 2));
    // a1 costs 2; b1 makes 2 * 2 = 4; a2 would make 3 * 8 = 24, so a is skipped.
    assert.deepEqual(ids(scheduler.admit()), ['a1', 'b1']);
    assert.deepEqual(ids(scheduler.admit()), ['a2']);
  });

  it('admits a prompt longer than the budget alone', () => {
    const scheduler = new Scheduler({ ...WIDE, maxBatchTokens: 10 });
    scheduler.enqueue(job('long', 'a', 50));
    scheduler.enqueue(job('short', 'b', 1));
    assert.deepEqual(ids(scheduler.admit()), ['long']);
    assert.deepEqual(ids(scheduler.admit()), ['short']);
  });

  it('limits distinct modules in the running set', () => {
    const scheduler = new Scheduler({ ...WIDE, maxModules: 2 });
    scheduler.enqueue(job('a', 'ta', 4, 'm1'));
    scheduler.enqueue(job('b', 'tb', 4, 'm2'));
    scheduler.enqueue(job('c', 'tc', 4, 'm3'));
    scheduler.enqueue(job('d', 'td', 4, 'm1'));
    scheduler.enqueue(job('e', 'te', 4, null));
    // c needs a third module and is skipped; d reuses m1 and e needs no module.
    assert.deepEqual(ids(scheduler.admit()), ['a', 'b', 'd', 'e']);
    scheduler.finish('a');
    assert.deepEqual(ids(scheduler.admit()), [], 'd still holds m1');
    scheduler.finish('d');
    assert.deepEqual(ids(scheduler.admit()), ['c']);
  });

  it('skips jobs that are not ready', () => {
    const scheduler = new Scheduler(WIDE);
    scheduler.enqueue(job('a1', 'a'));
    scheduler.enqueue(job('a2', 'a'));
    scheduler.enqueue(job('b1', 'b'));
    assert.deepEqual(ids(scheduler.admit((j) => j.id !== 'a1')), ['b1'], 'a2 stays behind a1 of the same tenant');
    assert.deepEqual(ids(scheduler.admit()), ['a1', 'a2']);
  });

  it('rejects jobs beyond the queue limit', () => {
    const scheduler = new Scheduler({ ...WIDE, maxQueue: 2 });
    scheduler.enqueue(job('a1', 'a'));
    scheduler.enqueue(job('b1', 'b'));
    assert.throws(() => scheduler.enqueue(job('c1', 'c')), QueueFullError);
    scheduler.admit();
    assert.equal(scheduler.numWaiting, 0, 'admitted jobs leave the queue');
    scheduler.enqueue(job('c1', 'c'));
    assert.equal(scheduler.numWaiting, 1);
  });

  it('rejects a duplicate job id', () => {
    const scheduler = new Scheduler(WIDE);
    scheduler.enqueue(job('x', 'a'));
    assert.throws(() => scheduler.enqueue(job('x', 'b')), DuplicateJobError);
    scheduler.admit();
    assert.throws(() => scheduler.enqueue(job('x', 'a')), DuplicateJobError, 'running ids count too');
  });

  it('cancels waiting and reports running jobs', () => {
    const scheduler = new Scheduler({ ...WIDE, maxBatchSize: 1 });
    scheduler.enqueue(job('a1', 'a'));
    scheduler.enqueue(job('a2', 'a'));
    scheduler.enqueue(job('b1', 'b'));
    scheduler.admit();
    assert.equal(scheduler.cancel('a1'), 'running');
    assert.equal(scheduler.cancel('b1'), 'waiting');
    assert.equal(scheduler.cancel('b1'), 'unknown');
    assert.equal(scheduler.cancel('nope'), 'unknown');
    assert.equal(scheduler.numWaiting, 1);
    assert.deepEqual(ids(scheduler.waitingJobs()), ['a2']);
    scheduler.finish('a1');
    assert.deepEqual(ids(scheduler.admit()), ['a2']);
  });

  it('admits nothing after close', () => {
    const scheduler = new Scheduler(WIDE);
    scheduler.enqueue(job('a1', 'a'));
    scheduler.enqueue(job('b1', 'b'));
    assert.deepEqual(ids(scheduler.close()).sort(), ['a1', 'b1']);
    assert.equal(scheduler.numWaiting, 0);
    assert.equal(scheduler.closed, true);
    assert.deepEqual(scheduler.admit(), []);
  });

  it('rejects invalid limits', () => {
    assert.throws(() => new Scheduler({ ...WIDE, maxBatchSize: 0 }), SchedulerLimitsError);
    assert.throws(() => new Scheduler({ ...WIDE, maxBatchTokens: 1.5 }), SchedulerLimitsError);
    assert.throws(() => new Scheduler({ ...WIDE, maxModules: Number.NaN }), SchedulerLimitsError);
    assert.doesNotThrow(() => new Scheduler({ ...WIDE, maxQueue: Number.POSITIVE_INFINITY }));
  });
});
