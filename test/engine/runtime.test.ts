import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import onnxProto, { type onnx as Onnx } from 'onnx-proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EngineRuntimeError,
  EngineWorker,
  memoryStats,
  parseEngineDevice,
  type TensorData,
} from '../../src/engine/runtime';
import { float16BitsToFloat32, float32ToFloat16Bits } from '../../src/engine/weights/dtype';
import { uniform } from '../helpers/random';

const { onnx } = onnxProto;
const FLOAT = onnx.TensorProto.DataType.FLOAT;

function valueInfo(name: string, dims: (number | string)[]): Onnx.IValueInfoProto {
  const dim = dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d }));
  return { name, type: { tensorType: { elemType: FLOAT, shape: { dim } } } };
}

function encodeModel(graph: Onnx.IGraphProto): Uint8Array {
  return onnx.ModelProto.encode({ irVersion: 8, opsetImport: [{ domain: '', version: 17 }], graph }).finish();
}

/** Y = X·W + B for X of shape [batch, k], with W [k, n] and B [n] as initializers. */
function affineModel(W: Float32Array, B: Float32Array, k: number, n: number): Uint8Array {
  return encodeModel({
    name: 'affine',
    node: [
      { opType: 'MatMul', input: ['X', 'W'], output: ['XW'] },
      { opType: 'Add', input: ['XW', 'B'], output: ['Y'] },
    ],
    initializer: [
      { name: 'W', dataType: FLOAT, dims: [k, n], floatData: [...W] },
      { name: 'B', dataType: FLOAT, dims: [n], floatData: [...B] },
    ],
    input: [valueInfo('X', ['batch', k])],
    output: [valueInfo('Y', ['batch', n])],
  });
}

function affineReference(X: Float32Array, W: Float32Array, B: Float32Array, m: number, k: number, n: number): Float32Array {
  const Y = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = B[j];
      for (let p = 0; p < k; p++) sum += X[i * k + p] * W[p * n + j];
      Y[i * n + j] = sum;
    }
  }
  return Y;
}

const [m, k, n] = [3, 5, 4];
const W = uniform(k * n, 1);
const B = uniform(n, 2);
const model = affineModel(W, B, k, n);
const input = (): TensorData => ({ dtype: 'float32', dims: [m, k], data: uniform(m * k, 3) });

describe('EngineWorker', () => {
  let engine: EngineWorker;
  let dir: string;
  beforeAll(async () => {
    engine = new EngineWorker({ intraOpThreads: 1 });
    dir = await mkdtemp(join(tmpdir(), 'engine-runtime-'));
  });
  afterAll(async () => {
    await engine.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('runs a model in the worker and matches a JavaScript computation', async () => {
    const session = await engine.createSession(model);
    expect(session.inputNames).toEqual(['X']);
    expect(session.outputNames).toEqual(['Y']);
    const X = input();
    const expected = affineReference(X.data as Float32Array, W, B, m, k, n);
    const { Y } = await engine.run(session, { X });
    expect(Y.dtype).toBe('float32');
    expect(Y.dims).toEqual([m, n]);
    expect(Y.data).toBeInstanceOf(Float32Array);
    for (let i = 0; i < expected.length; i++) expect(Y.data[i]).toBeCloseTo(expected[i], 5);
    await engine.release(session);
  });

  it('moves feed buffers to the worker instead of copying them, but never a shared buffer', async () => {
    const session = await engine.createSession(model);
    const owned = input();
    await engine.run(session, { X: owned });
    expect(owned.data.byteLength).toBe(0); // transferred away

    const big = new Float32Array(m * k * 2).fill(0.5);
    const view = big.subarray(m * k);
    const { Y } = await engine.run(session, { X: { dtype: 'float32', dims: [m, k], data: view } });
    expect(big.length).toBe(m * k * 2); // the rest of the caller's buffer is untouched
    expect(Y.data[0]).toBeCloseTo(affineReference(view, W, B, m, k, n)[0], 5);
    await engine.release(session);
  });

  it('rejects a malformed feed with a typed error and leaves every feed intact', async () => {
    const session = await engine.createSession(model);
    const X = input();
    const bad: TensorData = { dtype: 'float32', dims: [2, 2], data: new Float32Array(3) };
    const error = await engine.run(session, { X, bad }).catch((e) => e);
    expect(error).toBeInstanceOf(EngineRuntimeError);
    expect(error.code).toBe('INVALID_TENSOR');
    expect(error.message).toContain('tensor bad');
    expect(X.data.length).toBe(m * k);
    const wrongArray = { dtype: 'int64', dims: [1], data: new Float32Array(1) } as unknown as TensorData;
    await expect(engine.run(session, { X: wrongArray })).rejects.toThrow(/int64 data must be a BigInt64Array/);
    await engine.release(session);
  });

  it('exchanges float16, float64, int64 and bool tensors', async () => {
    const { INT64, BOOL, FLOAT16, DOUBLE } = onnx.TensorProto.DataType;
    const typed = (name: string, elemType: number, dims: number[]): Onnx.IValueInfoProto => ({
      name,
      type: { tensorType: { elemType, shape: { dim: dims.map((dimValue) => ({ dimValue })) } } },
    });
    const session = await engine.createSession(
      encodeModel({
        name: 'dtypes',
        node: [
          { opType: 'Cast', input: ['X'], output: ['H'], attribute: [{ name: 'to', type: 2, i: FLOAT16 }] },
          { opType: 'Cast', input: ['X'], output: ['D'], attribute: [{ name: 'to', type: 2, i: DOUBLE }] },
          { opType: 'Greater', input: ['X', 'zero'], output: ['P'] },
          { opType: 'Neg', input: ['I'], output: ['J'] },
          { opType: 'Cast', input: ['F'], output: ['G'], attribute: [{ name: 'to', type: 2, i: FLOAT }] },
        ],
        initializer: [{ name: 'zero', dataType: FLOAT, dims: [], floatData: [0] }],
        input: [valueInfo('X', [6]), typed('I', INT64, [2]), typed('F', FLOAT16, [6])],
        output: [typed('H', FLOAT16, [6]), typed('D', DOUBLE, [6]), typed('P', BOOL, [6]), typed('J', INT64, [2]), valueInfo('G', [6])],
      }),
    );
    // Ordinary values, a tie between two halves, just past it, past the largest half, below the smallest.
    const x = Float32Array.from([1, -2.5, 1 + 2 ** -11, 1 + 2 ** -11 + 2 ** -20, 70000, 2 ** -26]);
    const halves = Uint16Array.from(x, float32ToFloat16Bits);
    const { H, D, P, J, G } = await engine.run(session, {
      X: { dtype: 'float32', dims: [6], data: x.slice() },
      I: { dtype: 'int64', dims: [2], data: BigInt64Array.from([2n ** 40n, -3n]) },
      F: { dtype: 'float16', dims: [6], data: halves.slice() },
    });
    expect(H.dtype).toBe('float16');
    // Bits on every Node, though from Node 24 on onnxruntime hands out a Float16Array of values.
    expect(H.data).toBeInstanceOf(Uint16Array);
    expect([...H.data]).toEqual([...x].map(float32ToFloat16Bits)); // onnxruntime rounds as our converter does
    expect(D.data).toEqual(Float64Array.from(x));
    expect(P).toEqual({ dtype: 'bool', dims: [6], data: Uint8Array.from(x, (v) => (v > 0 ? 1 : 0)) });
    expect(J.data).toEqual(BigInt64Array.from([-(2n ** 40n), 3n]));
    expect(G.data).toEqual(Float32Array.from(halves, float16BitsToFloat32)); // float16 bits in, read as such
    await engine.release(session);
  });

  it('reports onnxruntime failures during a run as RUN_FAILED and hands the feeds back', async () => {
    const session = await engine.createSession(model);
    const values = uniform(m * (k + 1), 6);
    const wrongShape: TensorData = { dtype: 'float32', dims: [m, k + 1], data: values.slice() };
    const error = await engine.run(session, { X: wrongShape }).catch((e) => e);
    expect(error).toBeInstanceOf(EngineRuntimeError);
    expect(error.code).toBe('RUN_FAILED');
    expect(wrongShape.data.byteLength).toBe(0);
    expect(error.feeds.X).toEqual({ dtype: 'float32', dims: [m, k + 1], data: values });
    await engine.release(session);
  });

  it('reuses a cached session for the same model and disposes it with its last handle', async () => {
    const before = engine.sessionCount;
    const first = await engine.createSession(model);
    const second = await engine.createSession(new Uint8Array(model)); // equal bytes, another array
    expect(second.key).toBe(first.key);
    expect(engine.sessionCount).toBe(before + 1);

    await engine.release(first);
    expect(engine.sessionCount).toBe(before + 1);
    const { Y } = await engine.run(second, { X: input() });
    expect(Y.dims).toEqual([m, n]);
    await expect(engine.release(first)).rejects.toMatchObject({ code: 'SESSION_RELEASED' });

    await engine.release(second);
    expect(engine.sessionCount).toBe(before);
    await expect(engine.run(second, { X: input() })).rejects.toMatchObject({ code: 'SESSION_RELEASED' });
  });

  it('keys a session by the given content key', async () => {
    const session = await engine.createSession(model, { key: 'affine-v1' });
    expect(session.key).toBe('affine-v1');
    await engine.release(session);
  });

  it('reports a model onnxruntime cannot load as SESSION_CREATE_FAILED', async () => {
    await expect(engine.createSession(new Uint8Array([1, 2, 3]))).rejects.toMatchObject({ code: 'SESSION_CREATE_FAILED' });
    await expect(engine.createSession({ path: join(dir, 'absent.onnx') })).rejects.toMatchObject({
      code: 'SESSION_CREATE_FAILED',
    });
  });

  it('loads a model from a path, with its weights in an external data file beside it', async () => {
    const modelDir = join(dir, 'external');
    const weights = new Uint8Array(new Float32Array([...W, ...B]).buffer);
    const external = (offset: number, length: number) => [
      { key: 'location', value: 'affine.weights' },
      { key: 'offset', value: String(offset) },
      { key: 'length', value: String(length) },
    ];
    const bytes = encodeModel({
      name: 'affine-external',
      node: [
        { opType: 'MatMul', input: ['X', 'W'], output: ['XW'] },
        { opType: 'Add', input: ['XW', 'B'], output: ['Y'] },
      ],
      initializer: [
        { name: 'W', dataType: FLOAT, dims: [k, n], dataLocation: 1, externalData: external(0, W.byteLength) },
        { name: 'B', dataType: FLOAT, dims: [n], dataLocation: 1, externalData: external(W.byteLength, B.byteLength) },
      ],
      input: [valueInfo('X', ['batch', k])],
      output: [valueInfo('Y', ['batch', n])],
    });
    const path = join(modelDir, 'affine.onnx');
    await mkdir(modelDir, { recursive: true });
    await writeFile(path, bytes);
    await writeFile(join(modelDir, 'affine.weights'), weights);

    const session = await engine.createSession({ path });
    const X = input();
    const expected = affineReference(X.data as Float32Array, W, B, m, k, n);
    const { Y } = await engine.run(session, { X });
    for (let i = 0; i < expected.length; i++) expect(Y.data[i]).toBeCloseTo(expected[i], 5);
    await engine.release(session);
  });

  it('keeps the event loop responsive while a long run executes in the worker', async () => {
    const size = 512;
    const links = 120;
    const scale = 1 / Math.sqrt(size);
    const chain = encodeModel({
      name: 'matmul-chain',
      node: Array.from({ length: links }, (_, i) => ({
        opType: 'MatMul',
        input: [i === 0 ? 'X' : `H${i}`, 'W'],
        output: [i === links - 1 ? 'Y' : `H${i + 1}`],
      })),
      initializer: [{ name: 'W', dataType: FLOAT, dims: [size, size], floatData: [...uniform(size * size, 4).map((v) => v * scale)] }],
      input: [valueInfo('X', [size, size])],
      output: [valueInfo('Y', [size, size])],
    });
    const session = await engine.createSession(chain);
    const ticks: number[] = [];
    const timer = setInterval(() => ticks.push(performance.now()), 5);
    const started = performance.now();
    const { Y } = await engine.run(session, { X: { dtype: 'float32', dims: [size, size], data: uniform(size * size, 5) } });
    const elapsed = performance.now() - started;
    clearInterval(timer);
    expect(Y.dims).toEqual([size, size]);
    // A run on the main thread would leave no tick at all until it returned.
    const gaps = ticks.slice(1).map((t, i) => t - ticks[i]);
    expect(ticks.length).toBeGreaterThanOrEqual(5);
    expect(Math.max(...gaps)).toBeLessThan(elapsed / 2);
    await engine.release(session);
  });

  it('fails every call after close with WORKER_CLOSED', async () => {
    const other = new EngineWorker();
    const session = await other.createSession(model);
    await other.close();
    await expect(other.run(session, { X: input() })).rejects.toMatchObject({ code: 'WORKER_CLOSED' });
    await expect(other.createSession(model)).rejects.toMatchObject({ code: 'WORKER_CLOSED' });
  });
});

describe('device selection', () => {
  it('parses ENGINE_DEVICE, defaulting to cpu', () => {
    expect(parseEngineDevice(undefined)).toBe('cpu');
    expect(parseEngineDevice('')).toBe('cpu');
    expect(parseEngineDevice(' CUDA ')).toBe('cuda');
    expect(parseEngineDevice('webgpu')).toBe('webgpu');
    expect(() => parseEngineDevice('tpu')).toThrow(/ENGINE_DEVICE must be one of cpu, cuda, webgpu; got "tpu"/);
  });

  const binaries = join(dirname(createRequire(import.meta.url).resolve('onnxruntime-node')), '../bin/napi-v6', process.platform, process.arch);
  const hasCuda = existsSync(join(binaries, 'libonnxruntime_providers_cuda.so'));
  if (hasCuda) console.warn('[runtime] the CUDA provider is installed: the missing-provider test is skipped');

  it.skipIf(hasCuda)('explains how to install the CUDA provider when it is missing', async () => {
    const gpu = new EngineWorker({ device: 'cuda' });
    try {
      const error = await gpu.createSession(model).catch((e) => e);
      expect(error).toBeInstanceOf(EngineRuntimeError);
      expect(error.code).toBe('PROVIDER_UNAVAILABLE');
      expect(error.message).toContain('ENGINE_DEVICE=cuda is not available');
      expect(error.message).toContain('--onnxruntime-node-install=cuda12');
      expect(gpu.sessionCount).toBe(0);
    } finally {
      await gpu.close();
    }
  });
});

describe('memoryStats', () => {
  it('reports the peak resident set at least as large as the current one', () => {
    const stats = memoryStats();
    expect(stats.rssBytes).toBeGreaterThan(0);
    expect(stats.peakRssBytes).toBeGreaterThanOrEqual(stats.rssBytes * 0.99);
    expect(stats.heapUsedBytes).toBeGreaterThan(0);
  });
});
