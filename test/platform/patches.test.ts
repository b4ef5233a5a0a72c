import 'reflect-metadata';
import { Hash, createHash as nodeCreateHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import Module, { createRequire } from 'node:module';
import { ApolloServer, HeaderMap } from '@apollo/server';
import type { GatewayExecutor, GatewayInterface } from '@apollo/server-gateway-interface';
import { buildSchema, execute, parse, printSchema } from 'graphql';
import { Arg, Args, ArgsType, Ctx, Field, Int, Query, Resolver, buildSchema as buildTypeGraphqlSchema } from 'type-graphql';
import express from 'express';
import { rateLimit } from 'express-rate-limit';
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

/**
 * @apollo+utils.createhash: Apollo hashes every request's query; the hash no longer goes through the module loader
 * each time, nor makes a Hash object (a native handle each young-generation collection visits).
 */
describe('Apollo’s createHash, as patched', () => {
  it('hashes as node:crypto does, loading no module and making no Hash object per call', () => {
    const { createHash } = createRequire(import.meta.url)('@apollo/utils.createhash') as typeof import('@apollo/utils.createhash');
    const loader = Module as unknown as { _load: (...args: unknown[]) => unknown };
    const load = loader._load;
    let loads = 0;
    loader._load = function (this: unknown, ...args: unknown[]) {
      loads++;
      return load.apply(this, args);
    };
    const queries = ['{ me { id } }', 'query Q { models { nodes { id } } }'];
    let hashes: ReturnType<typeof createHash>[];
    try {
      hashes = queries.map((query) => createHash('sha256').update(query));
    } finally {
      loader._load = load;
    }
    expect(loads).toBe(0);
    expect(hashes.some((hash) => hash instanceof Hash)).toBe(false);
    expect(hashes.map((hash) => hash.digest('hex'))).toEqual(queries.map((query) => nodeCreateHash('sha256').update(query).digest('hex')));
    // Several updates, input encodings and a Buffer digest still answer as node's Hash does.
    expect(createHash('sha512').update('{ me').update(' { id } }').digest('base64')).toBe(nodeCreateHash('sha512').update(queries[0]).digest('base64'));
    expect(createHash('sha256').update(Buffer.from(queries[0]).toString('hex'), 'hex').digest()).toEqual(nodeCreateHash('sha256').update(queries[0]).digest());
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

/** express-rate-limit: the draft-8 headers' partition key, hashed per request, is hashed one-shot (no Hash object). */
describe('express-rate-limit’s partition key, as patched', () => {
  it('names the partition as before, making no Hash object', async () => {
    const app = express().use(rateLimit({ windowMs: 60_000, limit: 5, standardHeaders: 'draft-8', legacyHeaders: false, keyGenerator: () => 'a key' }));
    app.get('/', (_req, res) => res.end('ok')); // not res.send: its ETag is a hash
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const digest = Hash.prototype.digest;
    let digests = 0;
    Hash.prototype.digest = function (this: Hash, ...args: unknown[]) {
      digests++;
      return (digest as (...a: unknown[]) => unknown).apply(this, args);
    } as typeof digest;
    let policy: string | null;
    try {
      policy = (await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`)).headers.get('ratelimit-policy');
    } finally {
      Hash.prototype.digest = digest;
      server.close();
    }
    expect(digests).toBe(0);
    const partition = Buffer.from(nodeCreateHash('sha256').update('a key').digest('hex').slice(0, 12)).toString('base64');
    expect(policy).toBe(`"5-in-1min"; q=5; w=60; pk=:${partition}:`);
  });
});
