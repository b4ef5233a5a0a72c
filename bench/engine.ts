/**
 * Train steps per second of a small conv-attention network on CPU, and the time to build and
 * compile its train-step graph. `npm run bench:engine`; results go in bench/RESULTS.md.
 */
import { performance } from 'node:perf_hooks';
import { compileTrainStep, Trainer } from '../src/engine/autodiff';
import { serialize } from '../src/engine/graph';
import { EngineWorker } from '../src/engine/runtime';
import { convAttentionNet } from '../test/helpers/conv-attention';

const config = { batch: 4, size: 32, channels: 64, groups: 8 };
const STEPS = Number(process.env.BENCH_STEPS ?? 20);

const ms = (start: number) => performance.now() - start;

async function main() {
  const worker = new EngineWorker();
  let start = performance.now();
  const net = convAttentionNet(config);
  const buildMs = ms(start);

  const forward = convAttentionNet(config);
  forward.graph.output(forward.loss, 'loss');
  const forwardModel = serialize(forward.graph);

  start = performance.now();
  const step = compileTrainStep({ graph: net.graph, loss: net.loss, trainable: Object.keys(net.weights), optimizer: { maxGradNorm: 1 } });
  const compileMs = ms(start);

  start = performance.now();
  const trainer = await Trainer.create(worker, step, net.weights);
  const sessionMs = ms(start);

  for (let i = 0; i < 3; i++) await trainer.step(net.batch, 1e-3);
  start = performance.now();
  let loss = 0;
  for (let i = 0; i < STEPS; i++) loss = (await trainer.step(net.batch, 1e-3)).loss;
  const stepSeconds = ms(start) / 1000 / STEPS;

  const session = await worker.createSession(forwardModel);
  const copy = () => Object.fromEntries(Object.entries(net.batch).map(([k, t]) => [k, { ...t, data: t.data.slice() }])) as typeof net.batch;
  for (let i = 0; i < 3; i++) await worker.run(session, copy());
  start = performance.now();
  for (let i = 0; i < STEPS; i++) await worker.run(session, copy());
  const forwardSeconds = ms(start) / 1000 / STEPS;

  const params = step.params.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
  console.log(`conv-attention net ${JSON.stringify(config)}, ${params} trainable parameters, ${net.graph.nodes.length} train-step nodes`);
  console.log(`build forward graph        ${buildMs.toFixed(1)} ms`);
  console.log(`gradients + AdamW + serialize ${compileMs.toFixed(1)} ms (${(step.model.byteLength / 1024).toFixed(0)} KiB)`);
  console.log(`create ORT session         ${sessionMs.toFixed(1)} ms`);
  console.log(`train step                 ${(1 / stepSeconds).toFixed(2)} steps/s (${(stepSeconds * 1000).toFixed(1)} ms/step, loss ${loss.toFixed(4)})`);
  console.log(`forward only               ${(1 / forwardSeconds).toFixed(2)} runs/s (${(forwardSeconds * 1000).toFixed(1)} ms/run), step/forward ${(stepSeconds / forwardSeconds).toFixed(2)}x`);
  await trainer.dispose();
  await worker.release(session);
  await worker.close();
}

await main();
