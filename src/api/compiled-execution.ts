import type { GatewayExecutionResult, GatewayGraphQLRequestContext, GatewayInterface } from '@apollo/server-gateway-interface';
import { execute, GraphQLError, printSchema, type DocumentNode, type ExecutionResult, type GraphQLSchema } from 'graphql';
import { compileQuery, isCompiledQuery, type CompiledQuery } from 'graphql-jit';

type Data = Record<string, unknown>;
type Compiled = CompiledQuery<Data, Data> | ExecutionResult<Data>;

/**
 * Runs each operation as JavaScript compiled for it by graphql-jit, in place of graphql-js's
 * interpreter, which walks the document field by field on every request, allocating as it goes: a
 * list of 50 models costs the server a fifth to a third less CPU compiled (bench/RESULTS.md). Apollo
 * takes another executor only through its gateway interface, so this is one, serving our own schema;
 * everything before execution (parsing, validation, plugins) and after it (error formatting, HTTP
 * statuses) stays Apollo's.
 *
 * Compiled operations are kept beside the documents Apollo's document store caches (a WeakMap on the
 * parsed document), so they live exactly as long as those do and need no cache of their own.
 * Operations over WebSocket keep graphql-js's executor: each arrives parsed anew, so compiling it would
 * cost more than it saves, and a job's events are executed once for all their subscribers (shared-events.ts).
 */
export class CompiledExecution implements GatewayInterface {
  readonly #compiled = new WeakMap<DocumentNode, Map<string | null, Compiled>>();

  constructor(private readonly schema: GraphQLSchema) {}

  onSchemaLoadOrUpdate(callback: Parameters<GatewayInterface['onSchemaLoadOrUpdate']>[0]) {
    callback({ apiSchema: this.schema, coreSupergraphSdl: printSchema(this.schema) });
    return () => {};
  }

  async load() {
    return { executor: (request: GatewayGraphQLRequestContext) => this.#execute(request) };
  }

  async stop() {}

  async #execute({ document, operationName, context, request }: GatewayGraphQLRequestContext): Promise<GatewayExecutionResult> {
    const compiled = this.#compile(document, operationName);
    const variables = request.variables ?? {};
    if (isCompiledQuery(compiled)) {
      const result = (await compiled.query(undefined, context, variables)) as GatewayExecutionResult;
      const refusedBeforeRunning = result.errors?.length && !('data' in result);
      if (!refusedBeforeRunning) return result.errors ? { ...result, errors: result.errors.map(asGraphqlJsError) } : result;
    }
    // What graphql-jit refuses before running anything (an operation it cannot compile, variables that
    // do not coerce), graphql-js refuses too, with the errors Apollo knows (BAD_USER_INPUT, status 400).
    return execute({ schema: this.schema, document, operationName, contextValue: context, variableValues: variables });
  }

  #compile(document: DocumentNode, operationName: string | null): Compiled {
    let byName = this.#compiled.get(document);
    if (!byName) this.#compiled.set(document, (byName = new Map()));
    let compiled = byName.get(operationName);
    if (!compiled) byName.set(operationName, (compiled = compileQuery<Data, Data>(this.schema, document, operationName ?? undefined)));
    return compiled;
  }
}

/**
 * graphql-jit's errors have a read-only message, which plugins that rewrite messages (graphql-armor's
 * suggestion blocking) cannot take: the same error as graphql-js makes it.
 */
function asGraphqlJsError(error: GraphQLError): GraphQLError {
  const copy = new GraphQLError(error.message, { path: error.path, originalError: error.originalError, extensions: error.extensions });
  return Object.assign(copy, { locations: error.locations });
}
