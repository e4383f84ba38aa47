import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { authenticate, hashApiKey, parseApiKeys, ApiKeyFileError } from '../../src/server/auth.js';
import { HttpError } from '../../src/server/errors.js';
import { resolveServerConfig, ServerConfigError } from '../../src/server/config.js';

describe('server configuration', () => {
  test('defaults apply without flags or env', () => {
    const config = resolveServerConfig({}, {});
    assert.equal(config.host, '127.0.0.1');
    assert.equal(config.port, 8000);
    assert.equal(config.store, 'adapters-store');
    assert.equal(config.maxJsonBytes, 1024 * 1024);
    assert.equal(config.maxUploadBytes, 512 * 1024 * 1024);
    assert.equal(config.model, undefined);
  });

  test('flags win over environment variables', () => {
    const config = resolveServerConfig({ port: '9001' }, { INDUCER_PORT: '9002', INDUCER_MAX_QUEUE: '7', INDUCER_MODEL: '/m' });
    assert.equal(config.port, 9001);
    assert.equal(config.maxQueue, 7);
    assert.equal(config.model, '/m');
  });

  test('invalid values name the flag and variable', () => {
    assert.throws(() => resolveServerConfig({ port: '70000' }, {}), (error: unknown) => {
      assert.ok(error instanceof ServerConfigError);
      assert.match(error.message, /--port \(INDUCER_PORT\)/);
      return true;
    });
    assert.throws(() => resolveServerConfig({}, { INDUCER_CACHE_BYTES: 'lots' }), /--cache-bytes \(INDUCER_CACHE_BYTES\)/);
  });

  test('public host requires API keys', () => {
    assert.throws(() => resolveServerConfig({ host: '0.0.0.0' }, {}), /requires --api-keys/);
    assert.equal(resolveServerConfig({ host: '0.0.0.0', apiKeys: 'keys.json' }, {}).host, '0.0.0.0');
  });
});

describe('API keys', () => {
  // SHA-256 of "abc", a published test vector (FIPS 180-2).
  const ABC_SHA256 = 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad';

  test('hash matches the SHA-256 test vector', () => {
    assert.equal(hashApiKey('abc'), ABC_SHA256);
  });

  test('bearer key maps to its tenant', () => {
    const keys = parseApiKeys([{ key_sha256: ABC_SHA256.toUpperCase(), tenant: 'acme', role: 'admin' }], 'test');
    assert.deepEqual(authenticate('Bearer abc', keys), { tenant: 'acme', role: 'admin' });
    assert.throws(() => authenticate('Bearer abd', keys), (error: unknown) => error instanceof HttpError && error.status === 401);
    assert.throws(() => authenticate(undefined, keys), (error: unknown) => error instanceof HttpError && error.status === 401);
    assert.throws(() => authenticate('Basic abc', keys), (error: unknown) => error instanceof HttpError && error.status === 401);
  });

  test('no key table means the default tenant', () => {
    assert.deepEqual(authenticate(undefined, null), { tenant: 'default', role: 'admin' });
    assert.deepEqual(authenticate('Bearer anything', null), { tenant: 'default', role: 'admin' });
  });

  test('invalid key files are rejected', () => {
    assert.throws(() => parseApiKeys([{ key_sha256: 'abc', tenant: 'acme' }], 'k.json'), ApiKeyFileError);
    assert.throws(() => parseApiKeys([{ key_sha256: ABC_SHA256, tenant: '../x' }], 'k.json'), /tenant/);
    assert.throws(() => parseApiKeys([{ key_sha256: ABC_SHA256, tenant: 'a', extra: 1 }], 'k.json'), ApiKeyFileError);
    assert.throws(
      () => parseApiKeys([{ key_sha256: ABC_SHA256, tenant: 'a' }, { key_sha256: ABC_SHA256, tenant: 'b' }], 'k.json'),
      /repeats the hash/,
    );
    assert.throws(() => parseApiKeys([], 'k.json'), /at least one/);
  });
});
