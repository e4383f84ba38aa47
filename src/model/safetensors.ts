/**
 * Reader and writer for the safetensors format: an 8-byte little-endian header length, a JSON
 * header mapping tensor names to `{dtype, shape, data_offsets}`, then the raw little-endian data.
 * Float16 and bfloat16 tensors are widened to float32 on read.
 * @module
 */
import { readFile } from 'node:fs/promises';
import { floatTensor, formatShape, sizeOf, type HostTensor } from './tensor.js';

/** Element types this reader accepts. */
export type SafetensorsDType = 'F32' | 'F16' | 'BF16';

const BYTES_PER_ELEMENT: Readonly<Record<SafetensorsDType, number>> = { F32: 4, F16: 2, BF16: 2 };

/** Error for a safetensors file that cannot be read; the message names the file and the tensor. */
export class SafetensorsError extends Error {
  override readonly name = 'SafetensorsError';
}

/** Header entry of one tensor. */
export interface SafetensorsEntry {
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  /** Start and end byte offsets inside the data section. */
  readonly dataOffsets: readonly [number, number];
}

/** Parsed file: its `__metadata__` strings and tensors (float32). */
export interface SafetensorsContents {
  readonly metadata: Readonly<Record<string, string>>;
  readonly tensors: Map<string, HostTensor>;
}

/** Converts one IEEE half-precision value (as 16 bits) to a number. */
export function halfToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

/** Converts a number to IEEE half-precision bits, rounding to nearest even. */
export function floatToHalf(value: number): number {
  const f32 = new Float32Array([value]);
  const bits = new Uint32Array(f32.buffer)[0];
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  let mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  let e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - e;
    let half = mantissa >> shift;
    const rest = mantissa & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rest > halfway || (rest === halfway && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mantissa >> 13);
  const rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half++;
  return sign | half;
}

function parseHeader(bytes: Uint8Array, source: string): { entries: Map<string, SafetensorsEntry>; metadata: Record<string, string>; dataStart: number } {
  if (bytes.byteLength < 8) {
    throw new SafetensorsError(`${source}: file is ${bytes.byteLength} bytes, too short for a safetensors header`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  if (headerLength > bytes.byteLength - 8) {
    throw new SafetensorsError(
      `${source}: header length ${headerLength} exceeds the file size ${bytes.byteLength}; the file is truncated or not safetensors`,
    );
  }
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLength)));
  } catch (cause) {
    throw new SafetensorsError(`${source}: header is not valid JSON; the file is corrupted or not safetensors`, { cause });
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new SafetensorsError(`${source}: header must be a JSON object`);
  }
  const dataStart = 8 + headerLength;
  const dataLength = bytes.byteLength - dataStart;
  const entries = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof value !== 'object' || value === null) throw new SafetensorsError(`${source}: __metadata__ must be an object`);
      metadata = Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, String(v)]));
      continue;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new SafetensorsError(`${source}: tensor "${name}" must be an object with dtype, shape and data_offsets`);
    }
    const entry = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (entry.dtype !== 'F32' && entry.dtype !== 'F16' && entry.dtype !== 'BF16') {
      throw new SafetensorsError(
        `${source}: tensor "${name}" has dtype ${JSON.stringify(entry.dtype)}; supported dtypes are F32, F16 and BF16`,
      );
    }
    const shape = entry.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new SafetensorsError(`${source}: tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`);
    }
    const offsets = entry.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isInteger(o) && o >= 0)) {
      throw new SafetensorsError(`${source}: tensor "${name}" has invalid data_offsets ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    const expectedBytes = sizeOf(shape) * BYTES_PER_ELEMENT[entry.dtype];
    if (end < begin || end - begin !== expectedBytes) {
      throw new SafetensorsError(
        `${source}: tensor "${name}" with shape ${formatShape(shape)} and dtype ${entry.dtype} needs ${expectedBytes} bytes but data_offsets give ${end - begin}`,
      );
    }
    if (end > dataLength) {
      throw new SafetensorsError(
        `${source}: tensor "${name}" ends at byte ${end} of the data section, which has only ${dataLength} bytes; the file is truncated`,
      );
    }
    entries.set(name, { dtype: entry.dtype, shape, dataOffsets: [begin, end] });
  }
  return { entries, metadata, dataStart };
}

function decodeTensor(bytes: Uint8Array, entry: SafetensorsEntry): Float32Array {
  const [begin, end] = entry.dataOffsets;
  const raw = bytes.subarray(begin, end);
  const count = sizeOf(entry.shape);
  const out = new Float32Array(count);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  if (entry.dtype === 'F32') {
    if (raw.byteOffset % 4 === 0) out.set(new Float32Array(raw.buffer, raw.byteOffset, count));
    else for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
  } else if (entry.dtype === 'F16') {
    for (let i = 0; i < count; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
  } else {
    const widened = new Uint32Array(out.buffer);
    for (let i = 0; i < count; i++) widened[i] = view.getUint16(2 * i, true) << 16;
  }
  return out;
}

/** Reads only the header of a safetensors buffer (names, dtypes, shapes). */
export function readSafetensorsHeader(bytes: Uint8Array, source = 'safetensors'): Map<string, SafetensorsEntry> {
  return parseHeader(bytes, source).entries;
}

/** Parses a whole safetensors buffer. Throws {@link SafetensorsError} naming `source`. */
export function parseSafetensors(bytes: Uint8Array, source = 'safetensors'): SafetensorsContents {
  const { entries, metadata, dataStart } = parseHeader(bytes, source);
  const data = bytes.subarray(dataStart);
  const tensors = new Map<string, HostTensor>();
  for (const [name, entry] of entries) tensors.set(name, floatTensor(entry.shape, decodeTensor(data, entry)));
  return { metadata, tensors };
}

/** Reads and parses a safetensors file. */
export async function readSafetensorsFile(file: string): Promise<SafetensorsContents> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (cause) {
    throw new SafetensorsError(`cannot read ${file}: ${(cause as Error).message}`, { cause });
  }
  return parseSafetensors(bytes, file);
}

/**
 * Serializes tensors to the safetensors format, in the order given, stored as `dtype`
 * (F32 by default; F16 and BF16 round to nearest even).
 */
export function serializeSafetensors(
  tensors: ReadonlyMap<string, HostTensor> | Readonly<Record<string, HostTensor>>,
  metadata: Readonly<Record<string, string>> = {},
  dtype: SafetensorsDType = 'F32',
): Uint8Array {
  const list = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const width = BYTES_PER_ELEMENT[dtype];
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, tensor] of list) {
    const size = tensor.data.length * width;
    header[name] = { dtype, shape: tensor.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  let headerText = JSON.stringify(header);
  // Pad the header with spaces so the data section starts on an 8-byte boundary.
  while ((8 + Buffer.byteLength(headerText)) % 8 !== 0) headerText += ' ';
  const headerBytes = new TextEncoder().encode(headerText);
  const out = new Uint8Array(8 + headerBytes.byteLength + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(headerBytes.byteLength), true);
  out.set(headerBytes, 8);
  let position = 8 + headerBytes.byteLength;
  for (const [, tensor] of list) {
    const values = tensor.data;
    if (dtype === 'F32') {
      for (let i = 0; i < values.length; i++) view.setFloat32(position + 4 * i, values[i], true);
    } else if (dtype === 'F16') {
      for (let i = 0; i < values.length; i++) view.setUint16(position + 2 * i, floatToHalf(values[i]), true);
    } else {
      const bits = new Uint32Array(Float32Array.from(values).buffer);
      for (let i = 0; i < values.length; i++) {
        const b = bits[i];
        const rounded = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
        view.setUint16(position + 2 * i, Number.isNaN(values[i]) ? 0x7fc0 : rounded & 0xffff, true);
      }
    }
    position += values.length * width;
  }
  return out;
}
