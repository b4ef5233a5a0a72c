// The onnxruntime side of EngineWorker: creating and running sessions blocks, so it happens here,
// off the main thread. Plain ESM JavaScript so that tsx, vitest and a bundled Node build all start it
// as is; the message shapes are `WorkerRequest` / `WorkerResponse` in protocol.ts.
import { createRequire } from 'node:module';
import { parentPort, workerData } from 'node:worker_threads';

// onnxruntime-node is CommonJS; requiring it by a path as well as by name lets a GPU install outside
// node_modules (e.g. one with the CUDA provider) stand in for the project's CPU build.
const ort = createRequire(import.meta.url)(workerData?.onnxruntimeModule ?? 'onnxruntime-node');

/** @type {Map<string, import('onnxruntime-node').InferenceSession>} */
const sessions = new Map();

class RequestError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

async function create({ key, model, options }) {
  const available = ort.listSupportedBackends().map((backend) => backend.name);
  if (!available.includes(options.device)) {
    throw new RequestError('PROVIDER_UNAVAILABLE', `this onnxruntime-node build has no ${options.device} provider`);
  }
  const sessionOptions = {
    executionProviders: [options.device],
    graphOptimizationLevel: options.graphOptimizationLevel,
    logSeverityLevel: 3,
    intraOpNumThreads: options.intraOpThreads,
  };
  if (!options.memoryArena) sessionOptions.enableCpuMemArena = false;
  // Threads waiting between operators sleep instead of spinning: the cores are shared with the API's thread,
  // PostgreSQL and other sessions, which spinning would starve (it saves ~10% of a generation on an idle machine).
  const extra = { session: { 'intra_op.allow_spinning': '0' } };
  if (!options.foldConstants) extra.optimization = { disable_specified_optimizers: 'ConstantFolding' };
  if (!options.prepackWeights) extra.session.disable_prepacking = '1';
  sessionOptions.extra = extra;
  try {
    // A path lets onnxruntime find external data files (models over 2 GB) beside the model.
    const session = await ort.InferenceSession.create(model instanceof Uint8Array ? model : model.path, sessionOptions);
    sessions.set(key, session);
    return { inputNames: [...session.inputNames], outputNames: [...session.outputNames] };
  } catch (error) {
    // A provider that is listed but whose libraries or adapter are missing fails only here.
    const providerFailed = options.device !== 'cpu' && /shared librar|failed to load|adapter|provider/i.test(error.message);
    throw new RequestError(providerFailed ? 'PROVIDER_UNAVAILABLE' : 'SESSION_CREATE_FAILED', error.message);
  }
}

async function run({ key, feeds, outputNames }) {
  const session = sessions.get(key);
  if (!session) throw new RequestError('SESSION_RELEASED', `no session ${key} in the worker`);
  const inputs = {};
  for (const [name, { dtype, dims, data }] of Object.entries(feeds)) inputs[name] = ortTensor(dtype, data, dims);
  let results;
  try {
    results = await (outputNames ? session.run(inputs, outputNames) : session.run(inputs));
  } catch (error) {
    // The feeds' buffers were moved here: send them back so the caller can recover its state.
    throw Object.assign(new RequestError('RUN_FAILED', error.message), { feeds });
  }
  const outputs = {};
  const transfer = new Set();
  for (const [name, tensor] of Object.entries(results)) {
    const values = float16Bits(tensor);
    // Move whole buffers to the main thread; copy a view first so nothing else rides along.
    const whole = values.byteOffset === 0 && values.byteLength === values.buffer.byteLength;
    const data = whole ? values : values.slice();
    outputs[name] = { dtype: tensor.type, dims: [...tensor.dims], data };
    transfer.add(data.buffer);
  }
  return { value: outputs, transfer: [...transfer] };
}

// float16 crosses this boundary as its bits in a Uint16Array (`TensorArrays` in tensor.ts) on every Node. Where
// Node has a Float16Array (24 on), onnxruntime-common wraps float16 data in one, of values, over the same bytes:
// outputs come out so, and inputs reach onnxruntime-node 1.29's binding so, which reads their byte length as 0
// ("not enough space"; microsoft/onnxruntime#32323). These two functions are the only places that know.

/**
 * An input for session.run. The binding reads `type`, `dims`, `data` and `location` off each input (the Tensor
 * interface), so a float16 one goes as those properties with its bits as they are, not through `ort.Tensor`.
 */
function ortTensor(dtype, data, dims) {
  return dtype === 'float16' ? { type: dtype, dims, data, location: 'cpu' } : new ort.Tensor(dtype, data, dims);
}

/** An output's data, float16 as its bits. */
function float16Bits(tensor) {
  const { type, data } = tensor;
  return type === 'float16' && !(data instanceof Uint16Array) ? new Uint16Array(data.buffer, data.byteOffset, data.length) : data;
}

async function release({ key }) {
  const session = sessions.get(key);
  sessions.delete(key);
  await session?.release();
}

async function closeAll() {
  for (const key of [...sessions.keys()]) await release({ key });
}

async function handle(request) {
  switch (request.type) {
    case 'create':
      return { value: await create(request), transfer: [] };
    case 'run':
      return run(request);
    case 'release':
      return { value: await release(request), transfer: [] };
    case 'close':
      return { value: await closeAll(), transfer: [] };
    default:
      throw new RequestError('RUN_FAILED', `unknown request ${request.type}`);
  }
}

// One request at a time, in arrival order: a release never lands in the middle of a run.
let queue = Promise.resolve();
parentPort.on('message', (request) => {
  queue = queue.then(async () => {
    try {
      const { value, transfer } = await handle(request);
      parentPort.postMessage({ id: request.id, ok: true, result: value }, transfer);
    } catch (error) {
      const code = error instanceof RequestError ? error.code : 'RUN_FAILED';
      const feeds = error?.feeds;
      const transfer = feeds ? [...new Set(Object.values(feeds).map(({ data }) => data.buffer))] : [];
      parentPort.postMessage({ id: request.id, ok: false, error: { code, message: String(error?.message ?? error) }, feeds }, transfer);
    }
  });
});
