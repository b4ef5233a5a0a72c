import 'reflect-metadata';
import { createHash as nodeCreateHash } from 'node:crypto';
import Module, { createRequire } from 'node:module';
import { ApolloServer, HeaderMap } from '@apollo/server';
import type { GatewayExecutor, GatewayInterface } from '@apollo/server-gateway-interface';
import { buildSchema, execute, parse, printSchema } from 'graphql';
import { Arg, Args, ArgsType, Ctx, Field, Int, Query, Resolver, buildSchema as buildTypeGraphqlSchema } from 'type-graphql';
import { describe, expect, it } from 'vitest';

/** The changes in patches/, applied by patch-package after `npm install`: each test fails on the dependency unpatched. */

/**
 * @apollo+server: the HTTP response Apollo hands a gateway's executor (our CompiledExecution) keeps its `status`
 * accessor on a prototype, not in closures made per request, which kept every request alive through
 * young-generation collections (bench/RESULTS.md).
 */
describe('Apollo’s gateway request context, as patched', () => {
  /** `{ ok }` answered by a gateway whose executor runs `execute`, as our CompiledExecution is. */
  const throughGateway = async (execute: GatewayExecutor) => {
    const schema = buildSchema('type Query { ok: Boolean }');
    const gateway: GatewayInterface = {
      onSchemaLoadOrUpdate(callback) {
        callback({ apiSchema: schema, coreSupergraphSdl: printSchema(schema) });
        return () => {};
      },
      load: async () => ({ executor: execute }),
      stop: async () => {},
    };
    const apollo = new ApolloServer({ gateway });
    await apollo.start();
    try {
      return await apollo.executeHTTPGraphQLRequest({
        httpGraphQLRequest: { method: 'POST', headers: new HeaderMap([['content-type', 'application/json']]), search: '', body: { query: '{ ok }' } },
        context: async () => ({}),
      });
    } finally {
      await apollo.stop();
    }
  };

  it('carries a status that writes through to the HTTP response, from an accessor on its prototype', async () => {
    let http: { status?: number } | undefined;
    const response = await throughGateway(async (request) => {
      http = request.response!.http;
      http!.status = 203;
      return { data: { ok: true } };
    });
    expect(response.status).toBe(203);
    expect(http?.status).toBe(203);
    expect(Object.getOwnPropertyDescriptor(http!, 'status')).toBeUndefined();
  });

  it('negotiates incremental delivery only for an execution that can be incremental, not a gateway’s', async () => {
    // The Negotiator Apollo imports. A request without an `accept` header needs none: its answer is JSON.
    const Negotiator = createRequire(createRequire(import.meta.url).resolve('@apollo/server'))('negotiator') as { prototype: { mediaType: (...args: unknown[]) => unknown } };
    const mediaType = Negotiator.prototype.mediaType;
    let negotiations = 0;
    Negotiator.prototype.mediaType = function (this: unknown, ...args: unknown[]) {
      negotiations++;
      return mediaType.apply(this, args);
    };
    try {
      const response = await throughGateway(async () => ({ data: { ok: true } }));
      expect(response.body).toEqual({ kind: 'complete', string: '{"data":{"ok":true}}\n' });
    } finally {
      Negotiator.prototype.mediaType = mediaType;
    }
    expect(negotiations).toBe(0);
  });
});

/** @apollo+utils.createhash: Apollo hashes every request's query; the hash no longer goes through the module loader each time. */
describe('Apollo’s createHash, as patched', () => {
  it('hashes as node:crypto does, loading no module per call', () => {
    const { createHash } = createRequire(import.meta.url)('@apollo/utils.createhash') as typeof import('@apollo/utils.createhash');
    const loader = Module as unknown as { _load: (...args: unknown[]) => unknown };
    const load = loader._load;
    let loads = 0;
    loader._load = function (this: unknown, ...args: unknown[]) {
      loads++;
      return load.apply(this, args);
    };
    let digests: string[];
    try {
      digests = ['{ me { id } }', 'query Q { models { nodes { id } } }'].map((query) => createHash('sha256').update(query).digest('hex'));
    } finally {
      loader._load = load;
    }
    expect(loads).toBe(0);
    expect(digests).toEqual(['{ me { id } }', 'query Q { models { nodes { id } } }'].map((query) => nodeCreateHash('sha256').update(query).digest('hex')));
  });
});

/**
 * type-graphql: a resolver whose arguments need no validation gets them at once rather than after
 * Promise.all over validateArg's promises, and its parameters are not sorted again on every call.
 */
describe('type-graphql’s resolver parameters, as patched', () => {
  @ArgsType()
  class Window {
    @Field(() => Int, { nullable: true })
    first?: number | null;
  }

  @Resolver()
  class Probe {
    @Query(() => String)
    window(@Ctx() context: { prefix: string }, @Args(() => Window) window: Window, @Arg('name', () => String) name: string): string {
      return `${context.prefix} ${name} ${window.first ?? 'all'} ${window instanceof Window}`;
    }
  }

  it('calls a resolver with its arguments in order, in the same tick, when validation is off', async () => {
    const schema = await buildTypeGraphqlSchema({ resolvers: [Probe], validate: false });
    const document = parse('{ a: window(first: 3, name: "x") b: window(name: "y") }');
    const result = execute({ schema, document, contextValue: { prefix: 'p' } });
    // graphql-js answers synchronously when every resolver returned a value, not a promise.
    expect(result).not.toBeInstanceOf(Promise);
    expect(result).toEqual({ data: { a: 'p x 3 true', b: 'p y all true' } });
  });
});
