import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Rng } from '../../src/engine/random';
import { copies, type FeedSpec, randomFeeds } from './speed';

interface ProfileEvent {
  cat: string;
  name: string;
  ts: number;
  dur: number;
  args?: { op_name?: string; provider?: string };
}

/**
 * Per-operator time of one model on the CUDA provider, from onnxruntime's own profiler. Run the process with
 * CUDA_LAUNCH_BLOCKING=1: kernels then finish inside their node, so a node's time is its GPU time rather than
 * its launch time. One warm-up run, then `runs` profiled runs; returns a text table.
 */
export async function profileModel(ortModule: string, device: string, path: string, spec: FeedSpec, runs: number): Promise<string> {
  const ort = createRequire(import.meta.url)(ortModule);
  const prefix = `${path}.profile`;
  const session = await ort.InferenceSession.create(path, {
    executionProviders: [device], graphOptimizationLevel: 'all', enableProfiling: true, profileFilePrefix: prefix, logSeverityLevel: 3,
  });
  const values = randomFeeds(spec, new Rng(2));
  const feeds = () => Object.fromEntries(Object.entries(copies(values)).map(([name, t]) => [name, new ort.Tensor(t.dtype, t.data, t.dims)]));
  const wall: number[] = [];
  for (let i = 0; i <= runs; i++) {
    const start = performance.now();
    await session.run(feeds());
    wall.push(performance.now() - start);
  }
  session.endProfiling();
  await session.release();
  const dir = join(path, '..');
  const file = readdirSync(dir).filter((name) => join(dir, name).startsWith(prefix) && name.endsWith('.json')).sort().pop();
  if (!file) return `no profile written for ${path}`;
  const events = JSON.parse(readFileSync(join(dir, file), 'utf8')) as ProfileEvent[];
  rmSync(join(dir, file));
  const modelRuns = events.filter((e) => e.name === 'model_run').sort((a, b) => a.ts - b.ts);
  const firstTimed = modelRuns[1]?.ts ?? 0;
  const byOp = new Map<string, { us: number; count: number }>();
  const byNode = new Map<string, { op: string; us: number }>();
  let kernels = 0;
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time') || e.ts < firstTimed) continue;
    const op = `${e.args?.op_name ?? '?'}${e.args?.provider === 'CPUExecutionProvider' ? ' (CPU)' : ''}`;
    const entry = byOp.get(op) ?? { us: 0, count: 0 };
    entry.us += e.dur;
    entry.count++;
    byOp.set(op, entry);
    const node = byNode.get(e.name) ?? { op, us: 0 };
    node.us += e.dur;
    byNode.set(e.name, node);
    kernels += e.dur;
  }
  const timedRuns = modelRuns.slice(1);
  const runMs = timedRuns.reduce((sum, e) => sum + e.dur, 0) / 1000 / Math.max(1, timedRuns.length);
  const perRun = (us: number) => (us / 1000 / runs).toFixed(2).padStart(9);
  const lines = [
    `${path}: ${runs} profiled runs; wall per run ${wall.slice(1).map((ms) => ms.toFixed(1)).join(', ')} ms; ` +
      `model_run ${runMs.toFixed(1)} ms; sum of node times ${(kernels / 1000 / runs).toFixed(1)} ms per run`,
    'ms/run    share  nodes/run  op',
    ...[...byOp].sort((a, b) => b[1].us - a[1].us).slice(0, 25).map(([op, { us, count }]) =>
      `${perRun(us)} ${((100 * us) / kernels).toFixed(1).padStart(5)}% ${String(count / runs).padStart(9)}  ${op}`),
    'slowest nodes (ms/run):',
    ...[...byNode].sort((a, b) => b[1].us - a[1].us).slice(0, 25).map(([name, { op, us }]) => `${perRun(us)}  ${op}  ${name.replace(/_kernel_time$/, '')}`),
  ];
  return lines.join('\n');
}
