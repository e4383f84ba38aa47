import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { AdapterConfig } from '../../src/adapters/adapter-config.js';
import { createTuningModule, type TuningModule } from '../../src/adapters/module.js';
import { floatTensor } from '../../src/model/tensor.js';
import { ModuleCache, ModuleCacheOptionsError, type ModuleCacheEvent } from '../../src/adapters/module-cache.js';

/** Creates a module of `numFloats` float32 values (4 bytes each), because the cache only reads its size. */
function fakeModule(numFloats: number): TuningModule {
  // The cache never reads the config, so an empty object replaces a parsed one.
  const config = {} as AdapterConfig;
  return createTuningModule(config, new Map([['t', floatTensor([numFloats])]]));
}

/** Creates a loader that records each call and waits for `gate` when one is given. */
function countingLoader(sizes: Record<string, number>, gate?: Promise<void>) {
  const calls: string[] = [];
  const load = async (key: string, dir: string): Promise<TuningModule> => {
    calls.push(key);
    if (gate) await gate;
    if (!(key in sizes)) throw new Error(`module ${key} not found in ${dir}`);
    return fakeModule(sizes[key]);
  };
  return { calls, load };
}

describe('ModuleCache', () => {
  it('loads once and then hits', async () => {
    const events: ModuleCacheEvent[] = [];
    const { calls, load } = countingLoader({ a: 25 });
    const cache = new ModuleCache({ maxBytes: 1000, load, onEvent: (e) => events.push(e) });
    const first = await cache.get('a', '/dir/a');
    const second = await cache.get('a', '/dir/a');
    assert.equal(first, second);
    assert.deepEqual(calls, ['a']);
    assert.equal(events.length, 2);
    assert.equal(events[0].kind, 'miss');
    assert.equal(events[0].kind === 'miss' && events[0].sizeBytes, 100);
    assert.ok(events[0].kind === 'miss' && events[0].seconds >= 0, 'a miss reports its load time');
    assert.deepEqual(events[1], { kind: 'hit' });
    assert.equal(cache.totalBytes, 100);
  });

  it('shares one load between concurrent requests', async () => {
    let release = (): void => undefined;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const { calls, load } = countingLoader({ a: 10 }, gate);
    const cache = new ModuleCache({ maxBytes: 1000, load });
    const first = cache.get('a', '/dir/a');
    const second = cache.get('a', '/dir/a');
    release();
    const [m1, m2] = await Promise.all([first, second]);
    assert.equal(m1, m2);
    assert.deepEqual(calls, ['a']);
  });

  it('evicts the least recently used module beyond the byte limit', async () => {
    const events: ModuleCacheEvent[] = [];
    const { calls, load } = countingLoader({ a: 25, b: 25, c: 25, d: 25 });
    // Room for two modules of 100 bytes.
    const cache = new ModuleCache({ maxBytes: 250, load, onEvent: (e) => events.push(e) });
    await cache.get('a', '/a');
    await cache.get('b', '/b');
    await cache.get('c', '/c');
    assert.equal(cache.has('a'), false, 'a was the least recently used');
    assert.deepEqual(events.filter((e) => e.kind === 'eviction'), [{ kind: 'eviction', sizeBytes: 100 }]);
    await cache.get('b', '/b');
    await cache.get('d', '/d');
    assert.equal(cache.has('b'), true, 'b was used after c');
    assert.equal(cache.has('c'), false);
    assert.equal(cache.has('d'), true);
    assert.equal(cache.totalBytes, 200);
    await cache.get('a', '/a');
    assert.deepEqual(calls, ['a', 'b', 'c', 'd', 'a'], 'an evicted module loads again');
  });

  it('caches nothing after a failed load', async () => {
    const sizes: Record<string, number> = {};
    const { calls, load } = countingLoader(sizes);
    const cache = new ModuleCache({ maxBytes: 1000, load });
    await assert.rejects(cache.get('x', '/x'), /module x not found in \/x/);
    assert.equal(cache.has('x'), false);
    sizes.x = 5;
    const module = await cache.get('x', '/x');
    assert.equal(module.sizeBytes, 20);
    assert.deepEqual(calls, ['x', 'x']);
  });

  it('drops a module on evict', async () => {
    const events: ModuleCacheEvent[] = [];
    const { calls, load } = countingLoader({ a: 10 });
    const cache = new ModuleCache({ maxBytes: 1000, load, onEvent: (e) => events.push(e) });
    const loaded = await cache.get('a', '/a');
    assert.equal(cache.evict('a'), loaded);
    assert.equal(cache.has('a'), false);
    assert.deepEqual(events.at(-1), { kind: 'eviction', sizeBytes: 40 });
    assert.equal(cache.evict('a'), undefined);
    await cache.get('a', '/a');
    assert.deepEqual(calls, ['a', 'a']);
  });

  it('does not keep a load that was evicted while in progress', async () => {
    let release = (): void => undefined;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const { load } = countingLoader({ a: 10 }, gate);
    const cache = new ModuleCache({ maxBytes: 1000, load });
    const pending = cache.get('a', '/a');
    cache.evict('a');
    release();
    assert.equal((await pending).sizeBytes, 40, 'the request still gets its module');
    assert.equal(cache.has('a'), false);
  });

  it('returns a module larger than the cache without keeping it', async () => {
    const { load } = countingLoader({ big: 100 });
    const cache = new ModuleCache({ maxBytes: 100, load });
    const module = await cache.get('big', '/big');
    assert.equal(module.sizeBytes, 400);
    assert.equal(cache.has('big'), false);
    assert.equal(cache.totalBytes, 0);
  });

  it('rejects an invalid size limit', () => {
    const { load } = countingLoader({});
    assert.throws(() => new ModuleCache({ maxBytes: 0, load }), ModuleCacheOptionsError);
    assert.throws(() => new ModuleCache({ maxBytes: 1.5, load }), ModuleCacheOptionsError);
  });
});
