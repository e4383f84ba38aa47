/**
 * Admission scheduling for continuous batching, without any engine code: a waiting queue per
 * tenant, the running set, and the rule that picks which waiting jobs join the running batch
 * before the next step. Tenants take turns (round-robin), jobs of one tenant run in arrival
 * order, and admission respects the batch size, a prefill token budget and the number of
 * distinct modules that one batch can hold.
 * @module
 */
import { QueueFullError } from './backend.js';

/** The fields of a job that admission depends on. */
export interface SchedulableJob {
  readonly id: string;
  readonly tenant: string;
  /** Cache key of the job's module, or null for the frozen model (which needs no module slot). */
  readonly moduleKey: string | null;
  readonly numPromptTokens: number;
}

/** Limits of {@link Scheduler}. */
export interface SchedulerLimits {
  /** Maximum jobs in the running set (admitted and not yet finished). */
  readonly maxBatchSize: number;
  /**
   * Token budget of one prefill: the jobs admitted together are left-padded to their longest
   * prompt, so admitting them costs `numAdmitted * longestPrompt` tokens.
   */
  readonly maxBatchTokens: number;
  /** Maximum distinct modules in the running set (the engine's module slots). */
  readonly maxModules: number;
  /** Maximum jobs in the waiting queue; {@link Scheduler.enqueue} throws beyond it. */
  readonly maxQueue: number;
}

/** State of a job when {@link Scheduler.cancel} was called for it. */
export type CancelOutcome = 'waiting' | 'running' | 'unknown';

export class SchedulerLimitsError extends Error {
  override readonly name = 'SchedulerLimitsError';
}

export class DuplicateJobError extends Error {
  override readonly name = 'DuplicateJobError';
}

/** Suggested wait before retrying a rejected job, for the `Retry-After` header. */
const QUEUE_FULL_RETRY_AFTER_SECONDS = 1;

function checkLimits(limits: SchedulerLimits): void {
  const entries: [keyof SchedulerLimits, number][] = [
    ['maxBatchSize', limits.maxBatchSize],
    ['maxBatchTokens', limits.maxBatchTokens],
    ['maxModules', limits.maxModules],
    ['maxQueue', limits.maxQueue],
  ];
  for (const [name, value] of entries) {
    const valid = value === Number.POSITIVE_INFINITY || (Number.isSafeInteger(value) && value >= 1);
    if (!valid) throw new SchedulerLimitsError(`scheduler limit ${name} must be a positive integer, got ${value}`);
  }
}

/**
 * Waiting queue and running set of one engine. The caller runs the loop: {@link admit} before a
 * step, {@link finish} when a job ends, {@link cancel} when a client goes away.
 */
export class Scheduler<J extends SchedulableJob> {
  /**
   * Waiting jobs by tenant, in arrival order within a tenant. The map's insertion order is the
   * round-robin order: a tenant moves to the back when one of its jobs is admitted, so the
   * tenant served least recently comes first. A tenant leaves the map when its queue empties.
   */
  private readonly waitingByTenant = new Map<string, J[]>();
  /** Running jobs by id: admitted and not yet finished, cancelled or failed. */
  private readonly running = new Map<string, J>();
  /** Number of jobs over all waiting queues. */
  private numWaitingJobs = 0;
  /** False after {@link close}: nothing is admitted any more. */
  private admitting = true;

  constructor(readonly limits: SchedulerLimits) {
    checkLimits(limits);
  }

  get numWaiting(): number {
    return this.numWaitingJobs;
  }

  get numRunning(): number {
    return this.running.size;
  }

  /** Running jobs in admission order. */
  runningJobs(): J[] {
    return [...this.running.values()];
  }

  /** Waiting jobs, tenant by tenant in round-robin order. */
  waitingJobs(): J[] {
    return [...this.waitingByTenant.values()].flat();
  }

  has(jobId: string): boolean {
    return this.running.has(jobId) || this.findWaiting(jobId) !== null;
  }

  /**
   * Appends a job to its tenant's queue. Throws {@link QueueFullError} when `maxQueue` jobs are
   * waiting and {@link DuplicateJobError} when a job with the same id is waiting or running.
   */
  enqueue(job: J): void {
    if (this.has(job.id)) throw new DuplicateJobError(`job ${job.id} is already queued or running; give every job a unique id`);
    if (this.numWaitingJobs >= this.limits.maxQueue) {
      throw new QueueFullError(
        `the waiting queue is full (${this.numWaitingJobs} of ${this.limits.maxQueue} jobs); retry later`,
        QUEUE_FULL_RETRY_AFTER_SECONDS,
      );
    }
    const queue = this.waitingByTenant.get(job.tenant);
    if (queue) queue.push(job);
    else this.waitingByTenant.set(job.tenant, [job]);
    this.numWaitingJobs += 1;
  }

  /**
   * Moves waiting jobs into the running set and returns them in admission order. Tenants are
   * visited round-robin and each visit admits the head of that tenant's queue if it fits:
   *
   * - the running set stays within `maxBatchSize`;
   * - the admitted jobs, left-padded to their longest prompt, stay within `maxBatchTokens`;
   * - the running set uses at most `maxModules` distinct modules;
   * - `isReady(job)`, when given, returns true.
   *
   * A job longer than the whole token budget is admitted when it is the first of this call, so
   * it cannot wait forever. A tenant whose head job does not fit is skipped for the rest of this
   * call and keeps its place at the front of the round-robin order.
   *
   * NOTE: skipping bends first-come-first-served. A job that needs a new module can wait as long
   * as jobs of other tenants keep every module slot busy with the modules already running.
   */
  admit(isReady?: (job: J) => boolean): J[] {
    if (!this.admitting) return [];
    const admitted: J[] = [];
    const moduleKeys = new Set<string>();
    for (const job of this.running.values()) if (job.moduleKey !== null) moduleKeys.add(job.moduleKey);
    let longestPrompt = 0;
    const skippedTenants = new Set<string>();

    while (this.running.size < this.limits.maxBatchSize) {
      const next = this.nextCandidate(skippedTenants);
      if (next === null) break;
      const { tenant, job } = next;

      const newLongestPrompt = Math.max(longestPrompt, job.numPromptTokens);
      const prefillTokens = (admitted.length + 1) * newLongestPrompt;
      const overBudget = prefillTokens > this.limits.maxBatchTokens && admitted.length > 0;
      const needsNewModule = job.moduleKey !== null && !moduleKeys.has(job.moduleKey);
      const overModules = needsNewModule && moduleKeys.size >= this.limits.maxModules;
      if (overBudget || overModules || (isReady !== undefined && !isReady(job))) {
        skippedTenants.add(tenant);
        continue;
      }

      this.removeHead(tenant);
      this.running.set(job.id, job);
      admitted.push(job);
      longestPrompt = newLongestPrompt;
      if (job.moduleKey !== null) moduleKeys.add(job.moduleKey);
    }
    return admitted;
  }

  /** Removes a running job (finished, failed or cancelled). Returns whether it was running. */
  finish(jobId: string): boolean {
    return this.running.delete(jobId);
  }

  /**
   * Removes a waiting job, or reports that the job is running (the caller stops its row and then
   * calls {@link finish}). Returns where the job was.
   */
  cancel(jobId: string): CancelOutcome {
    if (this.running.has(jobId)) return 'running';
    const found = this.findWaiting(jobId);
    if (found === null) return 'unknown';
    const queue = this.waitingByTenant.get(found.tenant) as J[];
    queue.splice(found.index, 1);
    if (queue.length === 0) this.waitingByTenant.delete(found.tenant);
    this.numWaitingJobs -= 1;
    return 'waiting';
  }

  /** Stops admission for good and returns the waiting jobs, which leave the queue. */
  close(): J[] {
    this.admitting = false;
    const waiting = this.waitingJobs();
    this.waitingByTenant.clear();
    this.numWaitingJobs = 0;
    return waiting;
  }

  get closed(): boolean {
    return !this.admitting;
  }

  /** Returns the first tenant in round-robin order that is not skipped, with its head job. */
  private nextCandidate(skippedTenants: ReadonlySet<string>): { tenant: string; job: J } | null {
    for (const [tenant, queue] of this.waitingByTenant) {
      if (!skippedTenants.has(tenant)) return { tenant, job: queue[0] };
    }
    return null;
  }

  /** Removes the head job of `tenant` and moves the tenant to the back of the round-robin order. */
  private removeHead(tenant: string): void {
    const queue = this.waitingByTenant.get(tenant) as J[];
    queue.shift();
    this.numWaitingJobs -= 1;
    this.waitingByTenant.delete(tenant);
    if (queue.length > 0) this.waitingByTenant.set(tenant, queue);
  }

  private findWaiting(jobId: string): { tenant: string; index: number } | null {
    for (const [tenant, queue] of this.waitingByTenant) {
      const index = queue.findIndex((job) => job.id === jobId);
      if (index >= 0) return { tenant, index };
    }
    return null;
  }
}
