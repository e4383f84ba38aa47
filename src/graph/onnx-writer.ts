/**
 * Serializes a {@link Graph} to ONNX `ModelProto` bytes with protobufjs's wire-format writer.
 * Field numbers follow onnx.proto (ONNX IR version 8). Large initializers can be written to an
 * external data file so that models over the 2 GB protobuf limit load.
 * @module
 */
import protobuf from 'protobufjs';
import type { Attribute, DType, Dim, Graph, Initializer, Node, Value } from './ir.js';

const { Writer } = protobuf;
type ProtoWriter = protobuf.Writer;

/** ONNX TensorProto.DataType codes. */
const DATA_TYPE: Readonly<Record<DType, number>> = { float32: 1, int64: 7, bool: 9 };

/** ONNX AttributeProto.AttributeType codes. */
const ATTRIBUTE_TYPE = { float: 1, int: 2, string: 3, floats: 6, ints: 7 } as const;

export const ONNX_IR_VERSION = 8;
export const ONNX_OPSET = 18;

/** Options for {@link serializeModel}. */
export interface SerializeOptions {
  /**
   * Initializers of at least this many bytes go to the external data file instead of the model.
   * Default: never (everything inline).
   */
  readonly externalThresholdBytes?: number;
  /** File name, relative to the model file, that external data offsets refer to. */
  readonly externalDataFile?: string;
  readonly producerName?: string;
}

/** Serialized model: the ModelProto bytes and, when used, the external data chunks in file order. */
export interface SerializedModel {
  readonly model: Uint8Array;
  readonly externalData: readonly Uint8Array[];
  readonly externalDataBytes: number;
}

function bytesOf(init: Initializer): Uint8Array {
  const d = init.data;
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

function writeString(w: ProtoWriter, field: number, value: string): void {
  w.uint32((field << 3) | 2).string(value);
}

function writeMessage(w: ProtoWriter, field: number, body: (inner: ProtoWriter) => void): void {
  w.uint32((field << 3) | 2).fork();
  body(w);
  w.ldelim();
}

function writeDim(w: ProtoWriter, dim: Dim): void {
  writeMessage(w, 1, (d) => {
    if (typeof dim === 'number') d.uint32((1 << 3) | 0).int64(dim);
    else writeString(d, 2, dim);
  });
}

function writeValueInfo(w: ProtoWriter, field: number, value: Value): void {
  writeMessage(w, field, (v) => {
    writeString(v, 1, value.name);
    writeMessage(v, 2, (type) => {
      writeMessage(type, 1, (tensor) => {
        tensor.uint32((1 << 3) | 0).int32(DATA_TYPE[value.dtype]);
        writeMessage(tensor, 2, (shape) => {
          for (const d of value.shape) writeDim(shape, d);
        });
      });
    });
  });
}

function writeAttribute(w: ProtoWriter, name: string, attribute: Attribute): void {
  writeMessage(w, 5, (a) => {
    writeString(a, 1, name);
    switch (attribute.kind) {
      case 'float':
        a.uint32((2 << 3) | 5).float(attribute.value);
        break;
      case 'int':
        a.uint32((3 << 3) | 0).int64(attribute.value);
        break;
      case 'string':
        a.uint32((4 << 3) | 2).bytes(new TextEncoder().encode(attribute.value));
        break;
      case 'floats':
        for (const f of attribute.value) a.uint32((7 << 3) | 5).float(f);
        break;
      case 'ints':
        for (const i of attribute.value) a.uint32((8 << 3) | 0).int64(i);
        break;
    }
    a.uint32((20 << 3) | 0).int32(ATTRIBUTE_TYPE[attribute.kind]);
  });
}

function writeNode(w: ProtoWriter, node: Node): void {
  writeMessage(w, 1, (n) => {
    for (const input of node.inputs) writeString(n, 1, input);
    for (const output of node.outputs) writeString(n, 2, output);
    writeString(n, 3, node.name);
    writeString(n, 4, node.opType);
    for (const [name, attribute] of Object.entries(node.attributes)) writeAttribute(n, name, attribute);
  });
}

function writeInitializer(w: ProtoWriter, init: Initializer, external: { file: string; offset: number } | null): void {
  writeMessage(w, 5, (t) => {
    for (const d of init.dims) t.uint32((1 << 3) | 0).int64(d);
    t.uint32((2 << 3) | 0).int32(DATA_TYPE[init.dtype]);
    writeString(t, 8, init.name);
    if (external) {
      const entries: [string, string][] = [
        ['location', external.file],
        ['offset', String(external.offset)],
        ['length', String(init.data.byteLength)],
      ];
      for (const [key, value] of entries) {
        writeMessage(t, 13, (e) => {
          writeString(e, 1, key);
          writeString(e, 2, value);
        });
      }
      t.uint32((14 << 3) | 0).int32(1);
    } else {
      t.uint32((9 << 3) | 2).bytes(bytesOf(init));
    }
  });
}

/**
 * Serializes `graph` as a ModelProto with the default-domain opset {@link ONNX_OPSET}.
 * External chunks are aligned to 64 bytes; the caller writes them, in order, to `externalDataFile`.
 */
export function serializeModel(graph: Graph, options: SerializeOptions = {}): SerializedModel {
  const threshold = options.externalThresholdBytes ?? Number.POSITIVE_INFINITY;
  const externalFile = options.externalDataFile ?? 'model.onnx.data';
  const externalData: Uint8Array[] = [];
  let externalOffset = 0;

  const w = Writer.create();
  w.uint32((1 << 3) | 0).int64(ONNX_IR_VERSION);
  writeString(w, 2, options.producerName ?? 'inducer-serve');
  writeMessage(w, 7, (g) => {
    for (const node of graph.nodes) writeNode(g, node);
    writeString(g, 2, graph.name);
    for (const init of graph.initializers.values()) {
      if (init.data.byteLength >= threshold) {
        const padding = (64 - (externalOffset % 64)) % 64;
        if (padding) {
          externalData.push(new Uint8Array(padding));
          externalOffset += padding;
        }
        writeInitializer(g, init, { file: externalFile, offset: externalOffset });
        externalData.push(bytesOf(init));
        externalOffset += init.data.byteLength;
      } else {
        writeInitializer(g, init, null);
      }
    }
    for (const input of graph.inputs) writeValueInfo(g, 11, input);
    for (const output of graph.outputs) writeValueInfo(g, 12, output);
  });
  writeMessage(w, 8, (o) => {
    writeString(o, 1, '');
    o.uint32((2 << 3) | 0).int64(ONNX_OPSET);
  });
  return { model: w.finish(), externalData, externalDataBytes: externalOffset };
}
