import { EngineRuntimeError } from './errors';

/** Where sessions run. `cpu` ships with onnxruntime-node; `cuda` needs its provider binaries installed. */
export type EngineDevice = 'cpu' | 'cuda' | 'webgpu';

export const ENGINE_DEVICES: readonly EngineDevice[] = ['cpu', 'cuda', 'webgpu'];

/** Parses an `ENGINE_DEVICE` value (the caller reads the variable); unset or empty means `cpu`. */
export function parseEngineDevice(value: string | undefined): EngineDevice {
  const device = (value ?? '').trim().toLowerCase() || 'cpu';
  if ((ENGINE_DEVICES as readonly string[]).includes(device)) return device as EngineDevice;
  throw new EngineRuntimeError(
    'INVALID_DEVICE',
    `ENGINE_DEVICE must be one of ${ENGINE_DEVICES.join(', ')}; got "${value}"`,
  );
}

/** What to do when a device's provider cannot load, told to whoever reads the error. */
export const PROVIDER_INSTALL_HINTS: Record<EngineDevice, string> = {
  cpu: 'the CPU provider ships with onnxruntime-node; reinstall onnxruntime-node',
  cuda:
    'install the CUDA provider binaries: `npm rebuild onnxruntime-node --onnxruntime-node-install=cuda12` ' +
    '(or set ONNXRUNTIME_NODE_INSTALL=cuda12 before installing) on a machine with CUDA 12 and cuDNN 9, ' +
    "or point EngineWorker's onnxruntimeModule at an onnxruntime-node build that has it, or run with ENGINE_DEVICE=cpu",
  webgpu: 'WebGPU needs a GPU adapter (Vulkan on Linux) visible to this process, or run with ENGINE_DEVICE=cpu',
};
