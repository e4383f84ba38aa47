/**
 * In-memory LRU cache of loaded modules, bounded by their size in bytes. Concurrent requests for
 * a key that is not cached share one load, and an eviction is reported to a callback.
 * @module
 */
import { LRUCache } from 'lru-cache';
import type { TuningModule } from './module.js';

/** Loads one module version; rejects with an error that names the module when it cannot. */
export type ModuleLoader = (key: string, dir: string) => Promise<TuningModule>;

/** What the cache reports, in the shape of the backend's module cache metrics. */
export type ModuleCacheEvent =
  | { readonly kind: 'hit' }
  | { readonly kind: 'miss'; readonly sizeBytes: number; readonly seconds: number }
  | { readonly kind: 'eviction'; readonly sizeBytes: number };

export interface ModuleCacheOptions {
  /** Maximum total `sizeBytes` of the cached modules. */
  readonly maxBytes: number;
  readonly load: ModuleLoader;
  /**
   * Called on a hit (including a request that joins a load in progress), after each completed
   * load (a miss, with the module's size and the load time), and for every module that leaves
   * the cache, whether to make room or through {@link ModuleCache.evict}.
   */
  readonly onEvent?: (event: ModuleCacheEvent) => void;
}

export class ModuleCacheOptionsError extends Error {
  override readonly name = 'ModuleCacheOptionsError';
}

/** LRU cache of modules keyed by version (for example `tenant/name@version`). */
export class ModuleCache {
  private readonly cache: LRUCache<string, TuningModule>;
  /** Loads in progress by key; every request for such a key gets the same promise. */
  private readonly loading = new Map<string, Promise<TuningModule>>();
  /**
   * Evictions per key while a load of that key was in progress; a load that finds a newer count
   * than when it started does not store its result, because the caller asked to drop that version.
   */
  private readonly evictionCounts = new Map<string, number>();

  constructor(private readonly options: ModuleCacheOptions) {
    if (!Number.isSafeInteger(options.maxBytes) || options.maxBytes < 1) {
      throw new ModuleCacheOptionsError(`module cache size must be a positive whole number of bytes, got ${options.maxBytes}`);
    }
    this.cache = new LRUCache<string, TuningModule>({
      maxSize: options.maxBytes,
      // lru-cache requires sizes of at least 1.
      sizeCalculation: (module) => Math.max(1, module.sizeBytes),
      dispose: (module, _key, reason) => {
        if (reason === 'evict' || reason === 'delete') options.onEvent?.({ kind: 'eviction', sizeBytes: module.sizeBytes });
      },
    });
  }

  /** Number of cached modules. */
  get size(): number {
    return this.cache.size;
  }

  /** Total `sizeBytes` of the cached modules. */
  get totalBytes(): number {
    return this.cache.calculatedSize;
  }

  /** Returns whether `key` is cached (without marking it as recently used). */
  has(key: string): boolean {
    return this.cache.has(key);
  }

  /**
   * Returns the module of `key`, loading it from `dir` when it is not cached. A module larger
   * than the whole cache is returned but not kept. A failed load rejects every request that
   * shared it and leaves nothing cached, so the next request tries again.
   */
  get(key: string, dir: string): Promise<TuningModule> {
    const cached = this.cache.get(key);
    if (cached !== undefined) {
      this.options.onEvent?.({ kind: 'hit' });
      return Promise.resolve(cached);
    }
    const inProgress = this.loading.get(key);
    if (inProgress !== undefined) {
      this.options.onEvent?.({ kind: 'hit' });
      return inProgress;
    }

    const evictionsAtStart = this.evictionCounts.get(key) ?? 0;
    const started = performance.now();
    const load = this.options
      .load(key, dir)
      .then((module) => {
        this.options.onEvent?.({ kind: 'miss', sizeBytes: module.sizeBytes, seconds: (performance.now() - started) / 1000 });
        if ((this.evictionCounts.get(key) ?? 0) === evictionsAtStart) this.cache.set(key, module);
        return module;
      })
      .finally(() => {
        this.loading.delete(key);
        this.evictionCounts.delete(key);
      });
    this.loading.set(key, load);
    return load;
  }

  /** Drops the cached copy of `key`; a load of `key` in progress still completes but is not kept. Returns the dropped module. */
  evict(key: string): TuningModule | undefined {
    if (this.loading.has(key)) this.evictionCounts.set(key, (this.evictionCounts.get(key) ?? 0) + 1);
    const module = this.cache.peek(key);
    this.cache.delete(key);
    return module;
  }
}
