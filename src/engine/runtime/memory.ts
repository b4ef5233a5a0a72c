/** Process memory for benchmarks; worker threads share the process, so onnxruntime's memory counts too. */
export interface MemoryStats {
  rssBytes: number;
  /** The highest resident set size this process has reached. */
  peakRssBytes: number;
  heapUsedBytes: number;
  /** Memory of ArrayBuffers and other objects outside the V8 heap (tensors live here). */
  externalBytes: number;
}

export function memoryStats(): MemoryStats {
  const usage = process.memoryUsage();
  return {
    rssBytes: usage.rss,
    peakRssBytes: process.resourceUsage().maxRSS * 1024, // reported in kilobytes
    heapUsedBytes: usage.heapUsed,
    externalBytes: usage.external,
  };
}
