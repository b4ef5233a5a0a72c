/** Thrown out of a job a stopping worker gives back, so pg-boss hands it to another worker. */
export class WorkerStopping extends Error {
  override readonly name = 'WorkerStopping';
}

/**
 * The jobs a handler runs in this process. Each holds an AbortController that cancellation and
 * worker shutdown abort between steps; stop() aborts them all and waits until every run has settled.
 */
export class RunningJobs {
  readonly #controllers = new Map<string, AbortController>();
  readonly #settled = new Set<Promise<void>>();

  /** Follows a run until it settles, so stop() can wait for it; returns the run unchanged. */
  track(run: Promise<void>): Promise<void> {
    const settled = run.then(() => {}, () => {});
    this.#settled.add(settled);
    void settled.then(() => this.#settled.delete(settled));
    return run;
  }

  /** The controller of a job starting now; `finish` releases it. */
  start(jobId: string): AbortController {
    const controller = new AbortController();
    this.#controllers.set(jobId, controller);
    return controller;
  }

  finish(jobId: string): void {
    this.#controllers.delete(jobId);
  }

  /** Aborts every running job with WorkerStopping, so each returns to the queue, and waits for them. */
  async stop(): Promise<void> {
    for (const controller of this.#controllers.values()) controller.abort(new WorkerStopping('the worker is stopping'));
    await Promise.all(this.#settled);
  }
}
