import {
  createSourceEventStream, execute, getOperationAST, Kind, locatedError, print, type ExecutionArgs, type ExecutionResult, type FieldNode, type FragmentDefinitionNode,
} from 'graphql';
import type { Context } from './context';

/** Each event's results, by viewer and operation (its text and variables); gone with the event. */
const results = new WeakMap<object, Map<string, Promise<ExecutionResult>>>();

/**
 * graphql-js's `subscribe` (graphql-ws calls it for every subscription), except that an event object
 * many subscribers receive is executed once per viewer and operation rather than once per subscriber:
 * a job's state goes, as one object, to every subscriber of the job (services/job-events.ts: its
 * owner's and admins' tabs and clients), and a thousand executions of one selection on it made one
 * result a thousand times, on the thread that also drives the worker's steps. Executing an event
 * depends on the event, the operation's text and variables, and who asks: the key holds all of them.
 */
export async function subscribeSharingEvents(args: ExecutionArgs): Promise<AsyncIterableIterator<ExecutionResult> | ExecutionResult> {
  const events = await createSourceEventStream(args);
  if (!(Symbol.asyncIterator in events)) return events; // the subscription was refused: its errors
  const source = events[Symbol.asyncIterator]();
  const viewer = (args.contextValue as Context).viewer?.id ?? '';
  const operation = `${viewer}\n${args.operationName ?? ''}\n${args.document.loc?.source.body ?? print(args.document)}\n${JSON.stringify(args.variableValues ?? {})}`;

  const resultOf = (event: unknown): Promise<ExecutionResult> => {
    if (typeof event !== 'object' || event === null) return Promise.resolve(execute({ ...args, rootValue: event }));
    let byOperation = results.get(event);
    if (!byOperation) results.set(event, (byOperation = new Map()));
    let result = byOperation.get(operation);
    if (!result) byOperation.set(operation, (result = Promise.resolve(execute({ ...args, rootValue: event }))));
    return result;
  };

  // A stream that fails (a subscriber too far behind: FellBehind) ends with its error as the last
  // result, located at the subscription's field as graphql-js locates a resolver's, so the client gets
  // the error's own code; thrown instead, graphql-ws would report it without a path, as an internal error.
  const field = rootField(args);
  let failed = false;

  // Not an async generator: `return()` (the client left) must reach the source at once, even while `next()` waits on it.
  const stream: AsyncIterableIterator<ExecutionResult> = {
    next: async () => {
      if (failed) return { value: undefined, done: true };
      let next: IteratorResult<unknown>;
      try {
        next = await source.next();
      } catch (error) {
        failed = true;
        return { value: { data: null, errors: [locatedError(error, [field], [field.alias?.value ?? field.name.value])] }, done: false };
      }
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

/** The one root field of a subscription (validation allows it behind fragments). */
function rootField({ document, operationName }: ExecutionArgs): FieldNode {
  const fragments = document.definitions.filter((d): d is FragmentDefinitionNode => d.kind === Kind.FRAGMENT_DEFINITION);
  let [selection] = getOperationAST(document, operationName)!.selectionSet.selections;
  while (selection.kind !== Kind.FIELD) {
    const spread = selection;
    const fragment = spread.kind === Kind.FRAGMENT_SPREAD ? fragments.find((f) => f.name.value === spread.name.value)! : spread;
    [selection] = fragment.selectionSet.selections;
  }
  return selection;
}
