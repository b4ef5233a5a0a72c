import { readFileSync } from 'node:fs';
import { type Timing } from './speed';

/** diffusers_bench.py's JSON (it prints nothing else on stdout, but torch may warn before it). */
export function readDiffusersResults(path: string): Record<string, number | string> {
  const text = readFileSync(path, 'utf8');
  return JSON.parse(text.slice(text.indexOf('{')));
}

/**
 * One row per timing the issue sets a target for, ours beside diffusers' from the same call: engine, diffusers,
 * ratio, target, met. Memory compares nvidia-smi's reading (onnxruntime's arena included) with torch's max allocated.
 */
export function compareWithDiffusers(engine: Record<string, unknown>, diffusers: Record<string, number | string>): string {
  const median = (key: string) => (engine[key] as Timing | undefined)?.median;
  const trainPeakGiB = (engine.lora_train_gpu_mib as { peak: number | null } | undefined)?.peak;
  const rows: [string, number | undefined, number | undefined, string, number | undefined][] = [
    ['UNet guided step b2 64x64, fp16 (ms)', median('unet_step_cfg_b2_fp16_ms'), diffusers.txt2img_unet_step_cfg_b1_float16_ms as number, 'fp16', 0.5],
    ['UNet guided step b2 64x64, fp32/TF32 (ms)', median('unet_step_cfg_b2_fp32_ms'), diffusers.txt2img_unet_step_cfg_b1_float32_ms as number, 'fp32', undefined],
    ['VAE decode 512 px, fp16 (ms)', median('vae_decode_fp16_ms'), diffusers.vae_decode_512_fp16_ms as number, 'fp16', 0.5],
    ['VAE decode 512 px, fp32/TF32 (ms)', median('vae_decode_fp32_ms'), diffusers.vae_decode_512_fp16_ms as number, 'fp16', undefined],
    ['LoRA train step b2 512 px (ms)', median('lora_train_step_b2_ms'), diffusers.lora_train_step_b2_512_fp32_tf32_ms as number, 'fp32/TF32', 0.6],
    ['LoRA train step b2 512 px (ms)', median('lora_train_step_b2_ms'), diffusers.lora_train_step_b2_512_amp_fp16_ms as number, 'AMP fp16', 0.8],
    ['LoRA train step peak GPU memory (GiB)', trainPeakGiB == null ? undefined : trainPeakGiB / 1024, diffusers.lora_train_peak_mem_fp32_tf32_GiB as number, 'fp32/TF32', undefined],
  ];
  const fmt = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(2));
  const lines = [
    `diffusers on ${diffusers.gpu}, torch ${diffusers.torch}`,
    '| what | engine | diffusers | diffusers mode | engine / diffusers | target | met |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const [what, ours, theirs, mode, target] of rows) {
    const ratio = ours !== undefined && theirs ? ours / theirs : undefined;
    const met = target === undefined || ratio === undefined ? '' : ratio <= target ? 'yes' : 'no';
    lines.push(`| ${what} | ${fmt(ours)} | ${fmt(theirs)} | ${mode} | ${fmt(ratio)} | ${target === undefined ? '' : `<= ${target}`} | ${met} |`);
  }
  if (trainPeakGiB != null) lines.push(`LoRA step peak memory target <= 8 GiB: ${trainPeakGiB / 1024 <= 8 ? 'met' : 'not met'}`);
  return lines.join('\n');
}
