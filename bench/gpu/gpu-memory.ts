import { type ChildProcess, spawn } from 'node:child_process';

/**
 * Samples the card's used memory (nvidia-smi, every 50 ms) in the background; `peak()` is the largest
 * sample since the last `reset()`. Without nvidia-smi (a CPU run) every reading is null.
 */
export class GpuMemorySampler {
  #child: ChildProcess | null = null;
  #peak = -1;
  #last = -1;

  start(): void {
    try {
      const child = spawn('nvidia-smi', ['--query-gpu=memory.used', '--format=csv,noheader,nounits', '-lms', '50'], { stdio: ['ignore', 'pipe', 'ignore'] });
      child.on('error', () => (this.#child = null));
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        for (const line of chunk.split('\n')) {
          const mib = Number.parseFloat(line);
          if (!Number.isFinite(mib)) continue;
          this.#last = mib;
          this.#peak = Math.max(this.#peak, mib);
        }
      });
      child.unref();
      (child.stdout as unknown as { unref?: () => void }).unref?.();
      this.#child = child;
    } catch {
      this.#child = null;
    }
  }

  /** Starts a new peak from the current reading. */
  reset(): void {
    this.#peak = this.#last;
  }

  /** MiB, or null without samples. */
  peak(): number | null {
    return this.#peak < 0 ? null : this.#peak;
  }

  current(): number | null {
    return this.#last < 0 ? null : this.#last;
  }

  stop(): void {
    this.#child?.kill();
    this.#child = null;
  }
}
