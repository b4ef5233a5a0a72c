import pg from 'pg';
import type { Logger } from 'pino';
import { AppError } from './errors';
import { FINISHED } from './job-lifecycle';
import { JOB_STATE_JSON, JOB_STATES_CHANNEL, type JobState } from './job-state';
import { MODEL_EVENTS_CHANNEL, type ModelEvent } from './model-events';

/**
 * How many states a subscriber may fall behind before its stream ends with FellBehind. States are
 * shared objects, so the bound caps memory at a few kilobytes per subscriber; a consumer that reads
 * as fast as its socket allows stays within a handful.
 */
const MAX_BUFFERED_STATES = 1000;

/** Readers woken per turn of the event loop (Waker): a few milliseconds of socket writes. */
const WAKE_BATCH = 50;

const RECONNECT_DELAY_MS = 1000;

/** The listening connection's name in pg_stat_activity. */
export const JOB_STATES_LISTENER = 'bigdiffusion job states';

/** Ends a subscription that fell MAX_BUFFERED_STATES behind: it is told, rather than silently skipping states. */
class FellBehind extends AppError {
  constructor() {
    super('CONFLICT', `This subscription fell ${MAX_BUFFERED_STATES} states behind its job and was ended; subscribe again`);
  }
}

/** Ends an owner's (or a model's) feed whose connection was lost: states may have been missed, so the client starts again. */
class FeedInterrupted extends AppError {
  constructor(what = 'The job feed was interrupted and may have missed states; read your jobs again and subscribe again') {
    super('CONFLICT', what);
  }
}

const MODEL_FEED_INTERRUPTED = 'The model feed was interrupted and may have missed events; read the model again and subscribe again';

/** What a notification carries (publishJobState): a new state, and the id of the transaction that made it. */
interface JobEvent {
  xid: bigint;
  state: JobState;
}

/** The job's state, and the snapshot it was read in, in one statement. */
const READ_STATE = `SELECT pg_current_snapshot()::text AS snapshot, (SELECT ${JOB_STATE_JSON} FROM job WHERE job.id = $1) AS state`;

/**
 * The transactions a read saw (`pg_current_snapshot()`, "xmin:xmax:in-progress,..."): a committed
 * transaction is in it exactly when it committed before the read.
 */
class ReadSnapshot {
  readonly #xmin: bigint;
  readonly #xmax: bigint;
  readonly #inProgress: Set<bigint>;

  constructor(text: string) {
    const [xmin, xmax, inProgress] = text.split(':');
    this.#xmin = BigInt(xmin);
    this.#xmax = BigInt(xmax);
    this.#inProgress = new Set(inProgress ? inProgress.split(',').map(BigInt) : []);
  }

  saw(xid: bigint): boolean {
    return xid < this.#xmin || (xid < this.#xmax && !this.#inProgress.has(xid));
  }
}

/**
 * Job states of the whole cluster for this process's subscribers. One LISTEN connection, opened on the
 * first subscription (processes that never serve one, like workers, never open it), receives every
 * job's states in commit order; each state is parsed once and the same object goes to every subscriber
 * of its job. The connection also reads a job's current state once, when the job gets its first
 * subscriber in this process: later subscribers start from the latest state the feed holds, and no
 * subscriber ever takes a connection from the pool the workers write through.
 *
 * A read and the notifications race: a notification may arrive before or after a read that already
 * saw its change. Each read therefore takes its snapshot along, and a notification whose transaction
 * the snapshot saw is dropped; every other one is newer than the read, so the states sent are in
 * commit order, with none skipped or repeated. After a lost connection it reconnects and reads every
 * followed job again the same way: states committed while it was away are lost, the latest is not.
 */
export class JobEvents {
  readonly #feeds = new Map<string, JobFeed>();
  /** The streams of `followOwner`, by owner. */
  readonly #owners = new Map<string, Set<StateStream<JobState>>>();
  /** The streams of `followModel`, by model. */
  readonly #models = new Map<string, Set<StateStream<ModelEvent>>>();
  readonly #waker = new Waker();
  #client: Promise<pg.Client> | null = null;
  #connected: pg.Client | null = null;
  #closed = false;

  constructor(
    private readonly databaseUrl: string,
    private readonly log: Logger,
  ) {}

  /**
   * Job `jobId`'s states for one subscriber: its current state, then every state committed after it,
   * in order; the stream ends after a finished state, at once when there is no such job, and with
   * FellBehind when its reader lags MAX_BUFFERED_STATES behind.
   */
  async follow(jobId: string): Promise<AsyncIterableIterator<JobState>> {
    let feed = this.#feeds.get(jobId);
    if (!feed) {
      const created = new JobFeed();
      this.#feeds.set(jobId, created);
      created.ready = this.#read(jobId, created).catch((error: unknown) => {
        if (this.#feeds.get(jobId) === created) this.#feeds.delete(jobId);
        throw error;
      });
      feed = created;
    }
    await feed.ready;
    const joined = feed;
    const stream = new StateStream<JobState>(this.#waker, () => {
      joined.streams.delete(stream);
      if (joined.streams.size === 0 && this.#feeds.get(jobId) === joined) this.#feeds.delete(jobId);
    }, (state) => FINISHED.includes(state.status));
    joined.join(stream);
    return stream;
  }

  /**
   * Every state of any of `ownerId`'s jobs committed from now on, in commit order, until the reader
   * leaves; FellBehind when the reader lags MAX_BUFFERED_STATES behind, and FeedInterrupted when the
   * listening connection is lost (states may have been missed: the client reads the jobs again).
   */
  followOwner(ownerId: string): Promise<AsyncIterableIterator<JobState>> {
    return this.#join(this.#owners, ownerId);
  }

  /**
   * Every event of model `modelId` committed from now on (model-events.ts), in commit order, until the
   * reader leaves; ends like `followOwner`'s streams when the reader lags or the connection is lost.
   */
  followModel(modelId: string): Promise<AsyncIterableIterator<ModelEvent>> {
    return this.#join(this.#models, modelId);
  }

  /** A new open-ended stream among `registry`'s streams under `key`, once this process listens. */
  async #join<T>(registry: Map<string, Set<StateStream<T>>>, key: string): Promise<AsyncIterableIterator<T>> {
    await this.#listen();
    let streams = registry.get(key);
    if (!streams) registry.set(key, (streams = new Set()));
    const joined = streams;
    const stream: StateStream<T> = new StateStream<T>(this.#waker, () => {
      joined.delete(stream);
      if (joined.size === 0 && registry.get(key) === joined) registry.delete(key);
    });
    joined.add(stream);
    return stream;
  }

  async close(): Promise<void> {
    this.#closed = true;
    const client = this.#client;
    this.#client = null;
    if (client) await (await client.catch(() => null))?.end();
  }

  /** Reads the job's state on the listening connection and hands it to the feed, with the snapshot it was read in. */
  async #read(jobId: string, feed: JobFeed): Promise<void> {
    feed.hold();
    const client = await this.#listen();
    const { rows } = await client.query<{ snapshot: string; state: JobState | null }>(READ_STATE, [jobId]);
    feed.read(rows[0].state, new ReadSnapshot(rows[0].snapshot));
  }

  #listen(): Promise<pg.Client> {
    if (this.#closed) return Promise.reject(new Error('job events are closed'));
    this.#client ??= this.#connect().catch((error) => {
      this.#client = null;
      throw error;
    });
    return this.#client;
  }

  async #connect(): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: this.databaseUrl, application_name: JOB_STATES_LISTENER });
    client.on('notification', ({ channel, payload }) => {
      if (channel === MODEL_EVENTS_CHANNEL) return this.#receiveModelEvent(payload);
      let event: JobEvent;
      try {
        const { xid, state } = JSON.parse(payload ?? '') as { xid: string; state: JobState };
        event = { xid: BigInt(xid), state };
      } catch (error) {
        this.log.warn({ err: error, payload }, 'ignoring a malformed job state');
        return;
      }
      this.#feeds.get(event.state.jobId)?.receive(event);
      for (const stream of this.#owners.get(event.state.ownerId) ?? []) stream.push(event.state);
    });
    client.on('error', (error) => {
      this.log.error({ err: error }, 'job state connection lost');
      void client.end().catch(() => {});
      if (this.#closed || client !== this.#connected) return;
      this.#connected = null;
      this.#client = null;
      for (const streams of [...this.#owners.values()]) for (const stream of [...streams]) stream.fail(new FeedInterrupted());
      for (const streams of [...this.#models.values()]) for (const stream of [...streams]) stream.fail(new FeedInterrupted(MODEL_FEED_INTERRUPTED));
      setTimeout(() => this.#reconnect(), RECONNECT_DELAY_MS).unref();
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${JOB_STATES_CHANNEL}`);
      await client.query(`LISTEN ${MODEL_EVENTS_CHANNEL}`);
    } catch (error) {
      await client.end().catch(() => {});
      throw error;
    }
    this.#connected = client;
    return client;
  }

  #receiveModelEvent(payload: string | undefined): void {
    let event: ModelEvent;
    try {
      event = (JSON.parse(payload ?? '') as { event: ModelEvent }).event;
    } catch (error) {
      this.log.warn({ err: error, payload }, 'ignoring a malformed model event');
      return;
    }
    for (const stream of this.#models.get(event.modelId) ?? []) stream.push(event);
  }

  /** Listens again and reads every followed job again; a read that fails waits for the next reconnection. */
  #reconnect(): void {
    if (this.#closed || this.#feeds.size === 0) return;
    this.#listen().then(
      () => {
        for (const [jobId, feed] of this.#feeds) {
          this.#read(jobId, feed).catch((error: unknown) => this.log.warn({ err: error, jobId }, 'job state read failed after reconnecting'));
        }
      },
      () => setTimeout(() => this.#reconnect(), RECONNECT_DELAY_MS).unref(),
    );
  }
}

/** One job's subscribers in this process, and the latest state they were sent. */
class JobFeed {
  readonly streams = new Set<StateStream<JobState>>();
  /** The first read of the job; its subscribers wait for it. */
  ready!: Promise<void>;
  /** The latest state: where a new subscriber starts; null once the job is gone, undefined before the first read. */
  #latest: JobState | null | undefined;
  /** The snapshot of the latest read: notifications of transactions it saw are not news. */
  #seen: ReadSnapshot | undefined;
  /** Notifications that came while a read was on its way, applied once it is back; null while no read is. */
  #held: JobEvent[] | null = null;

  /** A read starts: notifications wait for it, since it may have seen them. */
  hold(): void {
    this.#held ??= [];
  }

  read(state: JobState | null, snapshot: ReadSnapshot): void {
    const held = this.#held ?? [];
    this.#held = null;
    this.#seen = snapshot;
    this.#send(state);
    for (const event of held) this.receive(event);
  }

  receive(event: JobEvent): void {
    if (this.#held) this.#held.push(event);
    else if (!this.#seen!.saw(event.xid)) this.#send(event.state);
  }

  join(stream: StateStream<JobState>): void {
    this.streams.add(stream);
    stream.push(this.#latest!);
  }

  /** A read after reconnecting may find the state that was already sent: it is not sent twice. */
  #send(state: JobState | null): void {
    if (this.#latest !== undefined && JSON.stringify(state) === JSON.stringify(this.#latest)) return;
    this.#latest = state;
    for (const stream of this.streams) stream.push(state);
  }
}

/**
 * Hands states to waiting readers a batch at a time, one batch per turn of the event loop. A state
 * for a thousand subscribers becomes a thousand socket writes; done in one go they would hold up
 * everything else on this thread for as long, and in a process that also runs a worker (ROLE=all)
 * that is the engine waiting for its next step.
 */
class Waker {
  readonly #due: { hand(): void }[] = [];

  wake(stream: { hand(): void }): void {
    if (this.#due.push(stream) === 1) setImmediate(() => this.#wakeSome());
  }

  #wakeSome(): void {
    for (const stream of this.#due.splice(0, WAKE_BATCH)) stream.hand();
    if (this.#due.length) setImmediate(() => this.#wakeSome());
  }
}

/**
 * One subscriber's states, in order. The feed pushes without waiting, so a slow reader holds up no one;
 * states wait here for it, up to MAX_BUFFERED_STATES, then the stream ends with FellBehind (after the
 * states already buffered) rather than skip states or grow without bound. Not an async generator:
 * `return()` (the client unsubscribed or left) must end it at once, even while `next()` waits.
 */
class StateStream<T> implements AsyncIterableIterator<T> {
  readonly #buffer: T[] = [];
  #reader: { resolve: (result: IteratorResult<T>) => void; reject: (error: Error) => void } | null = null;
  #ended = false;
  #error: Error | null = null;

  constructor(
    private readonly waker: Waker,
    private readonly leave: () => void,
    /** Whether a state is the stream's last (one job's stream ends after its finished state); an owner's or a model's goes on. */
    private readonly endsAfter: (state: T) => boolean = () => false,
  ) {}

  /** The next state, or null: the job is gone. */
  push(state: T | null): void {
    if (this.#ended) return;
    if (state === null) return this.#end();
    if (this.#buffer.length === MAX_BUFFERED_STATES) return this.#end(new FellBehind());
    this.#buffer.push(state);
    if (this.#reader && this.#buffer.length === 1) this.waker.wake(this);
    if (this.endsAfter(state)) this.#end();
  }

  /** Ends the stream with `error`, after the states already buffered. */
  fail(error: Error): void {
    this.#end(error);
  }

  next(): Promise<IteratorResult<T>> {
    const state = this.#buffer.shift();
    if (state) return Promise.resolve({ value: state, done: false });
    if (this.#error) return Promise.reject(this.#error);
    if (this.#ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => (this.#reader = { resolve, reject }));
  }

  /** The Waker's turn for this stream: its waiting reader gets the oldest state. */
  hand(): void {
    const state = this.#reader && this.#buffer.shift();
    if (!state) return;
    this.#reader!.resolve({ value: state, done: false });
    this.#reader = null;
  }

  async return(): Promise<IteratorResult<T>> {
    this.#buffer.length = 0;
    this.#error = null;
    this.#end();
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }

  /** No more states come: the feed forgets the stream, and a waiting reader with nothing left to read learns it now. */
  #end(error?: Error): void {
    if (!this.#ended) {
      this.#ended = true;
      this.#error = error ?? null;
      this.leave();
    }
    const reader = this.#buffer.length ? null : this.#reader;
    if (!reader) return;
    this.#reader = null;
    if (this.#error) reader.reject(this.#error);
    else reader.resolve({ value: undefined, done: true });
  }
}
