import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  parseSafetensors,
  readSafetensorsFile,
  readSafetensorsHeader,
  serializeSafetensors,
  SafetensorsError,
  type SafetensorsDType,
} from '../../src/model/safetensors.js';
import { floatTensor } from '../../src/model/tensor.js';

/** Splits a safetensors buffer into its parsed JSON header and its data section. */
function splitFile(bytes: Uint8Array): { header: Record<string, unknown>; data: Uint8Array; dataStart: number } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength))) as Record<string, unknown>;
  return { header, data: bytes.subarray(8 + headerLength), dataStart: 8 + headerLength };
}

/** Builds a safetensors file by hand from a header object and raw data bytes, without padding. */
function buildFile(header: unknown, data: readonly number[] = []): Uint8Array {
  const headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const bytes = new Uint8Array(8 + headerBytes.byteLength + data.length);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(headerBytes.byteLength), true);
  bytes.set(headerBytes, 8);
  bytes.set(data, 8 + headerBytes.byteLength);
  return bytes;
}

function uint16Values(data: Uint8Array): number[] {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const values: number[] = [];
  for (let i = 0; i < data.byteLength; i += 2) values.push(view.getUint16(i, true));
  return values;
}

function roundTrip(values: readonly number[], dtype: SafetensorsDType): { bits: number[]; decoded: Float32Array } {
  const bytes = serializeSafetensors({ x: floatTensor([values.length], Float32Array.from(values)) }, {}, dtype);
  const { data } = splitFile(bytes);
  const decoded = parseSafetensors(bytes).tensors.get('x')!.data;
  return { bits: uint16Values(data), decoded };
}

// Each row: input value, IEEE binary16 bits computed by hand, and the value those bits stand for.
const HALF_CASES: readonly [string, number, number, number][] = [
  ['one', 1, 0x3c00, 1],
  ['minus two', -2, 0xc000, -2],
  ['one half', 0.5, 0x3800, 0.5],
  ['one third', 1 / 3, 0x3555, 1365 / 4096],
  ['largest finite', 65504, 0x7bff, 65504],
  ['65519 rounds down to 65504', 65519, 0x7bff, 65504],
  ['65520 rounds up to infinity', 65520, 0x7c00, Infinity],
  ['smallest subnormal', 2 ** -24, 0x0001, 2 ** -24],
  ['half the smallest subnormal ties to zero', 2 ** -25, 0x0000, 0],
  ['above half the smallest subnormal', 1.5 * 2 ** -25, 0x0001, 2 ** -24],
  ['subnormal rounding up to the smallest normal', 1023.5 * 2 ** -24, 0x0400, 2 ** -14],
  ['tie rounds to even (down)', 1 + 2 ** -11, 0x3c00, 1],
  ['tie rounds to even (up)', 1 + 3 * 2 ** -11, 0x3c02, 1 + 2 ** -9],
  ['negative zero', -0, 0x8000, -0],
  ['infinity', Infinity, 0x7c00, Infinity],
  ['negative infinity', -Infinity, 0xfc00, -Infinity],
];

// Each row: input value, bfloat16 bits (the top 16 bits of float32, rounded to nearest even) and their value.
const BFLOAT16_CASES: readonly [string, number, number, number][] = [
  ['one', 1, 0x3f80, 1],
  ['minus one and a half', -1.5, 0xbfc0, -1.5],
  ['pi', Math.PI, 0x4049, 3.140625],
  ['tie rounds to even (down)', 1 + 2 ** -8, 0x3f80, 1],
  ['tie rounds to even (up)', 1 + 3 * 2 ** -8, 0x3f82, 1 + 2 ** -6],
  ['just above a tie', 1 + 2 ** -8 + 2 ** -20, 0x3f81, 1 + 2 ** -7],
  ['largest float32 rounds to infinity', 3.4028234663852886e38, 0x7f80, Infinity],
  ['negative zero', -0, 0x8000, -0],
  ['infinity', Infinity, 0x7f80, Infinity],
  ['negative infinity', -Infinity, 0xff80, -Infinity],
];

describe('serializeSafetensors and parseSafetensors', () => {
  it('F32 stores little-endian float bits', () => {
    const values = Float32Array.of(1, -2.5, 0.1);
    const bytes = serializeSafetensors({ a: floatTensor([3], values) });
    const { header, data, dataStart } = splitFile(bytes);

    assert.deepEqual(header, { a: { dtype: 'F32', shape: [3], data_offsets: [0, 12] } });
    assert.equal(dataStart % 8, 0, 'data section starts on an 8-byte boundary');
    // 1.0 = 0x3f800000, -2.5 = 0xc0200000, float32(0.1) = 0x3dcccccd.
    assert.deepEqual([...data], [0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0, 0xcd, 0xcc, 0xcc, 0x3d]);

    const parsed = parseSafetensors(bytes).tensors.get('a')!;
    assert.deepEqual(parsed.shape, [3]);
    assert.deepEqual([...parsed.data], [1, -2.5, Math.fround(0.1)]);
  });

  it('F32 round trip keeps several tensors and metadata', () => {
    const tensors = new Map([
      ['first', floatTensor([2, 3], Float32Array.of(1, 2, 3, 4, 5, 6))],
      ['scalar', floatTensor([], Float32Array.of(-7))],
      ['empty', floatTensor([0, 4])],
    ]);
    const bytes = serializeSafetensors(tensors, { format: 'pt', note: 'test' });
    const { header } = splitFile(bytes);
    assert.deepEqual(header.__metadata__, { format: 'pt', note: 'test' });

    const parsed = parseSafetensors(bytes);
    assert.deepEqual(parsed.metadata, { format: 'pt', note: 'test' });
    assert.deepEqual([...parsed.tensors.keys()], ['first', 'scalar', 'empty']);
    assert.deepEqual(parsed.tensors.get('first')!.shape, [2, 3]);
    assert.deepEqual([...parsed.tensors.get('first')!.data], [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(parsed.tensors.get('scalar')!.shape, []);
    assert.deepEqual([...parsed.tensors.get('scalar')!.data], [-7]);
    assert.deepEqual(parsed.tensors.get('empty')!.shape, [0, 4]);
    assert.equal(parsed.tensors.get('empty')!.data.length, 0);
  });

  for (const [name, value, bits, widened] of HALF_CASES) {
    it(`F16 ${name}`, () => {
      const { bits: stored, decoded } = roundTrip([value], 'F16');
      assert.equal(stored[0], bits, `bits 0x${stored[0].toString(16)}, expected 0x${bits.toString(16)}`);
      assert.ok(Object.is(decoded[0], widened), `decoded ${decoded[0]}, expected ${widened}`);
    });
  }

  it('F16 NaN stays NaN', () => {
    const { bits, decoded } = roundTrip([NaN], 'F16');
    assert.equal(bits[0], 0x7e00);
    assert.ok(Number.isNaN(decoded[0]));
  });

  for (const [name, value, bits, widened] of BFLOAT16_CASES) {
    it(`BF16 ${name}`, () => {
      const { bits: stored, decoded } = roundTrip([value], 'BF16');
      assert.equal(stored[0], bits, `bits 0x${stored[0].toString(16)}, expected 0x${bits.toString(16)}`);
      assert.ok(Object.is(decoded[0], widened), `decoded ${decoded[0]}, expected ${widened}`);
    });
  }

  it('BF16 NaN stays NaN', () => {
    const { bits, decoded } = roundTrip([NaN], 'BF16');
    assert.equal(bits[0], 0x7fc0);
    assert.ok(Number.isNaN(decoded[0]));
  });

  it('header records F16 and BF16 offsets', () => {
    const tensors = { a: floatTensor([3]), b: floatTensor([2, 2]) };
    for (const dtype of ['F16', 'BF16'] as const) {
      const { header } = splitFile(serializeSafetensors(tensors, {}, dtype));
      assert.deepEqual(header.a, { dtype, shape: [3], data_offsets: [0, 6] });
      assert.deepEqual(header.b, { dtype, shape: [2, 2], data_offsets: [6, 14] });
    }
  });
});

describe('parseSafetensors on hand-built files', () => {
  it('reads F32 data that is not 4-byte aligned', () => {
    const header = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
    const headerLength = JSON.stringify(header).length;
    assert.notEqual((8 + headerLength) % 4, 0, 'the test needs an unaligned data section');
    // 1.5 = 0x3fc00000, -4 = 0xc0800000.
    const bytes = buildFile(header, [0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x80, 0xc0]);
    assert.deepEqual([...parseSafetensors(bytes).tensors.get('a')!.data], [1.5, -4]);
  });

  it('reads F16 and BF16 tensors at their offsets', () => {
    const header = {
      half: { dtype: 'F16', shape: [2], data_offsets: [0, 4] },
      bfloat: { dtype: 'BF16', shape: [2], data_offsets: [4, 8] },
    };
    // half: 0x3c00 = 1, 0xc100 = -2.5. bfloat: 0x4040 = 3, 0xbf00 = -0.5.
    const bytes = buildFile(header, [0x00, 0x3c, 0x00, 0xc1, 0x40, 0x40, 0x00, 0xbf]);
    const tensors = parseSafetensors(bytes).tensors;
    assert.deepEqual([...tensors.get('half')!.data], [1, -2.5]);
    assert.deepEqual([...tensors.get('bfloat')!.data], [3, -0.5]);
  });

  it('readSafetensorsHeader lists entries', () => {
    const bytes = buildFile({ w: { dtype: 'BF16', shape: [1, 3], data_offsets: [0, 6] } }, [0, 0, 0, 0, 0, 0]);
    const entries = readSafetensorsHeader(bytes);
    assert.deepEqual([...entries.keys()], ['w']);
    assert.deepEqual(entries.get('w'), { dtype: 'BF16', shape: [1, 3], dataOffsets: [0, 6] });
  });
});

describe('parseSafetensors errors', () => {
  const validTensor = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };

  it('file shorter than the length field', () => {
    assert.throws(() => parseSafetensors(new Uint8Array(5), 'tiny.safetensors'), (error: unknown) => {
      assert.ok(error instanceof SafetensorsError);
      assert.match(error.message, /tiny\.safetensors/);
      assert.match(error.message, /5 bytes/);
      return true;
    });
  });

  it('header length beyond the file', () => {
    const bytes = buildFile({ a: validTensor }, new Array(8).fill(0));
    const truncated = bytes.subarray(0, 20);
    assert.throws(() => parseSafetensors(truncated, 'cut.safetensors'), (error: unknown) => {
      assert.ok(error instanceof SafetensorsError);
      assert.match(error.message, /cut\.safetensors/);
      assert.match(error.message, /truncated/);
      return true;
    });
  });

  it('truncated data section', () => {
    const bytes = serializeSafetensors({ weight: floatTensor([4], Float32Array.of(1, 2, 3, 4)) });
    const truncated = bytes.subarray(0, bytes.byteLength - 2);
    assert.throws(() => parseSafetensors(truncated, 'short.safetensors'), (error: unknown) => {
      assert.ok(error instanceof SafetensorsError);
      assert.match(error.message, /short\.safetensors/);
      assert.match(error.message, /"weight"/);
      assert.match(error.message, /truncated/);
      return true;
    });
  });

  it('header that is not JSON', () => {
    const text = new TextEncoder().encode('{"a": {');
    const bytes = new Uint8Array(8 + text.byteLength);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(text.byteLength), true);
    bytes.set(text, 8);
    assert.throws(() => parseSafetensors(bytes, 'bad.safetensors'), (error: unknown) => {
      assert.ok(error instanceof SafetensorsError);
      assert.match(error.message, /bad\.safetensors/);
      assert.match(error.message, /not valid JSON/);
      return true;
    });
  });

  it('header that is a JSON array', () => {
    assert.throws(() => parseSafetensors(buildFile([1, 2]), 'array.safetensors'), SafetensorsError);
  });

  it('unsupported dtype', () => {
    const bytes = buildFile({ ids: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, new Array(8).fill(0));
    assert.throws(() => parseSafetensors(bytes), (error: unknown) => {
      assert.ok(error instanceof SafetensorsError);
      assert.match(error.message, /"ids"/);
      assert.match(error.message, /I64/);
      return true;
    });
  });

  it('invalid shape', () => {
    const bytes = buildFile({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, new Array(4).fill(0));
    assert.throws(() => parseSafetensors(bytes), /"a" has an invalid shape/);
  });

  it(
    'tensor entry that is null',
    () => {
      assert.throws(() => parseSafetensors(buildFile({ a: null })), SafetensorsError);
    },
  );

  it('data_offsets size does not match the shape', () => {
    const bytes = buildFile({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, new Array(12).fill(0));
    assert.throws(() => parseSafetensors(bytes, 'sized.safetensors'), (error: unknown) => {
      assert.ok(error instanceof SafetensorsError);
      assert.match(error.message, /sized\.safetensors/);
      assert.match(error.message, /"a"/);
      assert.match(error.message, /needs 12 bytes/);
      assert.match(error.message, /give 8/);
      return true;
    });
  });

  it('data_offsets end before begin', () => {
    const bytes = buildFile({ a: { dtype: 'F32', shape: [1], data_offsets: [8, 4] } }, new Array(8).fill(0));
    assert.throws(() => parseSafetensors(bytes), SafetensorsError);
  });

  it('data_offsets that are not two integers', () => {
    for (const offsets of [[0], [0, 4, 8], [0, 4.5], 'x', null]) {
      const bytes = buildFile({ a: { dtype: 'F32', shape: [1], data_offsets: offsets } }, new Array(4).fill(0));
      assert.throws(() => parseSafetensors(bytes), /invalid data_offsets/, `offsets ${JSON.stringify(offsets)}`);
    }
  });

  it('data_offsets beyond the data section', () => {
    const bytes = buildFile({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, new Array(4).fill(0));
    assert.throws(() => parseSafetensors(bytes), /ends at byte 8 of the data section, which has only 4 bytes/);
  });
});

describe('readSafetensorsFile', () => {
  it('reads a written file and names a missing one', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'safetensors-test-'));
    try {
      const file = path.join(dir, 'w.safetensors');
      await writeFile(file, serializeSafetensors({ w: floatTensor([2], Float32Array.of(0.25, -8)) }));
      const contents = await readSafetensorsFile(file);
      assert.deepEqual([...contents.tensors.get('w')!.data], [0.25, -8]);

      const missing = path.join(dir, 'absent.safetensors');
      await assert.rejects(readSafetensorsFile(missing), (error: unknown) => {
        assert.ok(error instanceof SafetensorsError);
        assert.ok(error.message.includes(missing));
        return true;
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
