import { createSourceEventStream, execute, print, type ExecutionArgs, type ExecutionResult } from 'graphql';

/** Each event's results, by operation (its text and variables); gone with the event. */
const results = new WeakMap<object, Map<string, Promise<ExecutionResult>>>();

/**
 * graphql-js's `subscribe` (graphql-ws calls it for every subscription), except that an event object
 * many subscribers receive is executed once per operation rather than once per subscriber: a job's
 * state goes, as one object, to every subscriber of the job (services/job-events.ts), and a thousand
 * executions of one selection on it made one result a thousand times, on the thread that also drives
 * the worker's steps.
 *
 * Sharing needs the result to depend on nothing but the event, the operation's text and its
 * variables. That holds for subscription results here: whom a stream is for was decided when it was
 * subscribed (the `jobUpdated` resolver authorizes like the `job` query), and the fields of what it
 * streams (JobUpdate) are the event's own, read with no viewer.
 */
export async function subscribeSharingEvents(args: ExecutionArgs): Promise<AsyncIterableIterator<ExecutionResult> | ExecutionResult> {
  const events = await createSourceEventStream(args);
  if (!(Symbol.asyncIterator in events)) return events; // the subscription was refused: its errors
  const source = events[Symbol.asyncIterator]();
  const operation = `${args.operationName ?? ''}\n${args.document.loc?.source.body ?? print(args.document)}\n${JSON.stringify(args.variableValues ?? {})}`;

  const resultOf = (event: unknown): Promise<ExecutionResult> => {
    if (typeof event !== 'object' || event === null) return Promise.resolve(execute({ ...args, rootValue: event }));
    let byOperation = results.get(event);
    if (!byOperation) results.set(event, (byOperation = new Map()));
    let result = byOperation.get(operation);
    if (!result) byOperation.set(operation, (result = Promise.resolve(execute({ ...args, rootValue: event }))));
    return result;
  };

  // Not an async generator: `return()` (the client left) must reach the source at once, even while `next()` waits on it.
  const stream: AsyncIterableIterator<ExecutionResult> = {
    next: async () => {
      const next = await source.next();
      return next.done ? next : { value: await resultOf(next.value), done: false };
    },
    return: async () => {
      await source.return?.();
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]: () => stream,
  };
  return stream;
}
