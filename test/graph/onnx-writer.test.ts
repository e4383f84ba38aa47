import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import ort from 'onnxruntime-node';
import { GraphBuilder } from '../../src/graph/builder.js';
import { serializeModel } from '../../src/graph/onnx-writer.js';

function smallGraph() {
  const b = new GraphBuilder('small');
  const x = b.input('x', 'float32', ['batch', 2]);
  const w = b.initializer('w', 'float32', [2, 3], Float32Array.from([1, 2, 3, 4, 5, 6]));
  const bias = b.constFloat([0.5, -0.5, 1]);
  const y = b.tanh(b.add(b.matMul(x, w), bias));
  b.output(y, 'y');
  const rowSum = b.reduceSum(y, [1], false);
  b.output(rowSum, 'row_sum');
  return b.build();
}

function expected(x: number[][]): { y: number[][]; rowSum: number[] } {
  const w = [
    [1, 2, 3],
    [4, 5, 6],
  ];
  const bias = [0.5, -0.5, 1];
  const y = x.map((row) => [0, 1, 2].map((j) => Math.tanh(row[0] * w[0][j] + row[1] * w[1][j] + bias[j])));
  return { y, rowSum: y.map((r) => r[0] + r[1] + r[2]) };
}

describe('serializeModel', () => {
  it('runs in onnxruntime with inline weights', async () => {
    const { model } = serializeModel(smallGraph());
    const session = await ort.InferenceSession.create(model);
    const x = [
      [0.1, -0.2],
      [0.3, 0.05],
      [-0.4, 0.2],
    ];
    const out = await session.run({ x: new ort.Tensor('float32', Float32Array.from(x.flat()), [3, 2]) });
    const want = expected(x);
    assert.deepEqual(out.y.dims, [3, 3]);
    const y = out.y.data as Float32Array;
    want.y.flat().forEach((v, i) => assert.ok(Math.abs(y[i] - v) < 1e-6, `y[${i}] = ${y[i]}, expected ${v}`));
    const rowSum = out.row_sum.data as Float32Array;
    want.rowSum.forEach((v, i) => assert.ok(Math.abs(rowSum[i] - v) < 1e-6, `row_sum[${i}] = ${rowSum[i]}, expected ${v}`));
  });

  it('runs with weights in an external data file', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'onnx-external-'));
    try {
      const serialized = serializeModel(smallGraph(), { externalThresholdBytes: 16, externalDataFile: 'weights.bin' });
      assert.ok(serialized.externalDataBytes >= 24, 'the 24-byte weight should be external');
      await writeFile(path.join(dir, 'model.onnx'), serialized.model);
      await writeFile(path.join(dir, 'weights.bin'), Buffer.concat(serialized.externalData));
      const session = await ort.InferenceSession.create(path.join(dir, 'model.onnx'));
      const x = [[0.25, -0.75]];
      const out = await session.run({ x: new ort.Tensor('float32', Float32Array.from(x.flat()), [1, 2]) });
      const want = expected(x);
      const y = out.y.data as Float32Array;
      want.y.flat().forEach((v, i) => assert.ok(Math.abs(y[i] - v) < 1e-6, `y[${i}] = ${y[i]}, expected ${v}`));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
