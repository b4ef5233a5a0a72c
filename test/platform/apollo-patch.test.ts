import { ApolloServer, HeaderMap } from '@apollo/server';
import type { GatewayInterface } from '@apollo/server-gateway-interface';
import { buildSchema, printSchema } from 'graphql';
import { describe, expect, it } from 'vitest';

/**
 * patches/@apollo+server+*.patch (applied by `npm install`): the HTTP response Apollo hands a gateway's executor
 * (our CompiledExecution) keeps its `status` accessor on a prototype, not in closures made per request, which
 * kept every request alive through young-generation collections (bench/RESULTS.md).
 */
describe('Apollo’s gateway request context, as patched', () => {
  it('carries a status that writes through to the HTTP response, from an accessor on its prototype', async () => {
    const schema = buildSchema('type Query { ok: Boolean }');
    let http: { status?: number } | undefined;
    const gateway: GatewayInterface = {
      onSchemaLoadOrUpdate(callback) {
        callback({ apiSchema: schema, coreSupergraphSdl: printSchema(schema) });
        return () => {};
      },
      load: async () => ({
        executor: async (request) => {
          http = request.response!.http;
          http!.status = 203;
          return { data: { ok: true } };
        },
      }),
      stop: async () => {},
    };
    const apollo = new ApolloServer({ gateway });
    await apollo.start();
    try {
      const response = await apollo.executeHTTPGraphQLRequest({
        httpGraphQLRequest: { method: 'POST', headers: new HeaderMap([['content-type', 'application/json']]), search: '', body: { query: '{ ok }' } },
        context: async () => ({}),
      });
      expect(response.status).toBe(203);
      expect(http?.status).toBe(203);
      expect(Object.getOwnPropertyDescriptor(http!, 'status')).toBeUndefined();
    } finally {
      await apollo.stop();
    }
  });
});
