import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApolloServer } from '@apollo/server';
import { ApolloServerPluginCacheControlDisabled, ApolloServerPluginInlineTraceDisabled } from '@apollo/server/plugin/disabled';
import { ApolloServerPluginDrainHttpServer } from '@apollo/server/plugin/drainHttpServer';
import { expressMiddleware } from '@as-integrations/express5';
import { ApolloArmor } from '@escape.tech/graphql-armor';
import express, { type ErrorRequestHandler } from 'express';
import { GraphQLError, parse, specifiedRules, validate, type GraphQLFormattedError, type GraphQLSchema } from 'graphql';
import graphqlUploadExpress from 'graphql-upload/graphqlUploadExpress.mjs';
import { useServer } from 'graphql-ws/use/ws';
import { WebSocketServer } from 'ws';
import { playground } from '../../web/server';
import { AppError } from '../services/errors';
import type { Services } from '../services/container';
import { createContext, type Context } from './context';
import { isJsonGraphqlPost, sendRequestError, serveJsonGraphqlPost, type RequestError } from './graphql-post';
import { subscribeSharingEvents } from './shared-events';
import { isServiceOutage } from '../services/availability';
import { createErrorFormatter, SERVICE_UNAVAILABLE_MESSAGE } from './errors';
import { CompiledExecution } from './compiled-execution';
import { imageDownloads } from './image-downloads';
import { weightDownloads } from './weight-downloads';
import { queryCostError } from './query-cost';
import { perKeyRateLimit } from './rate-limit';

export const GRAPHQL_PATH = '/graphql';
/** Tokens a query may have: parsing stops there, before a huge document costs its whole parse. */
const MAX_QUERY_TOKENS = 2000;
/** Instance photos are the only uploads; one request carries one. */
const MAX_UPLOAD_BYTES = 20 * 1024 * 1024;

export interface RunningApi {
  url: string;
  stop(): Promise<void>;
}

/** GraphQL over HTTP (Apollo on express) and WebSocket (graphql-ws) on one port. */
export async function startApiServer(services: Services, schema: GraphQLSchema): Promise<RunningApi> {
  const { config, log, keys } = services;
  const app = express();
  app.disable('x-powered-by'); // as on the lean path below: it tells attackers what to look up
  const rateLimited = perKeyRateLimit(config.requestsPerMinutePerKey);
  const failedBeforeGraphql = requestErrors(services);
  const httpServer = http.createServer((req, res) => {
    if (!isJsonGraphqlPost(req, GRAPHQL_PATH)) return app(req, res);
    // express-rate-limit reads req.ip and req.app (its checks of the proxy settings) and calls res.append:
    // the three that node's objects lack. Not express's prototypes, as express gives the requests it routes:
    // an object whose prototype is swapped outlives its request until a full collection, which made each
    // young-generation collection copy megabytes and take 20 ms, one every 300 ms under load.
    Object.assign(req, { ip: req.socket.remoteAddress, app });
    Object.assign(res, { append: appendHeader });
    rateLimited(req as express.Request, res as express.Response, (error?: unknown) => {
      const served = error
        ? Promise.reject(error)
        : serveJsonGraphqlPost(req, res, { apollo, maxBodyBytes: config.maxBodyBytes, context: contextOf, requestError: failedBeforeGraphql, contextRefusal });
      served.catch((failure: unknown) => {
        if (!res.headersSent) sendRequestError(res, failedBeforeGraphql(failure));
        else res.destroy();
      });
    });
  });
  const formatError = createErrorFormatter(log);
  const armor = new ApolloArmor({
    maxDepth: { n: config.queryMaxDepth },
    // Our own cost limit counts page sizes (query-cost.ts); armor's would count a connection once.
    costLimit: { enabled: false },
    maxAliases: { n: 15 },
    maxDirectives: { n: 20 },
    // Armor's token limit and suggestion blocking are Apollo plugins, so they missed WebSocket operations and
    // cost every HTTP request two hooks: graphql-js's parser counts tokens (MAX_QUERY_TOKENS, on both
    // transports), and errors.ts drops suggestions from every error a client sees.
    maxTokens: { enabled: false },
    blockFieldSuggestion: { enabled: false },
  });
  const protection = armor.protect();

  const wsServer = new WebSocketServer({ server: httpServer, path: GRAPHQL_PATH, maxPayload: config.maxBodyBytes });
  const wsCleanup = useServer<Record<string, unknown>, { viewer: Context['viewer'] }>(
    {
      schema,
      isProd: true,
      subscribe: subscribeSharingEvents,
      // Parse and validate here rather than through graphql-ws's hooks, where a syntax error would
      // close the socket: returned errors reach the client as this operation's errors.
      onSubscribe: (_ctx, _id, payload) => {
        let document;
        try {
          document = parse(payload.query, { maxTokens: MAX_QUERY_TOKENS });
        } catch (error) {
          if (error instanceof GraphQLError) return [error];
          throw error;
        }
        const errors = validate(schema, document, [...specifiedRules, ...protection.validationRules]);
        if (errors.length) return errors;
        const tooCostly = queryCostError(schema, document, payload.variables, payload.operationName, config.queryMaxCost);
        if (tooCostly) return [tooCostly];
        return { schema, document, variableValues: payload.variables, operationName: payload.operationName };
      },
      // The key comes once, in connection_init; a bad one closes the socket (4403 Forbidden).
      onConnect: async (ctx) => {
        const header = ctx.connectionParams?.authorization;
        try {
          ctx.extra.viewer = (await keys.authenticate(typeof header === 'string' ? header : undefined)) ?? null;
          return true;
        } catch (error) {
          if (error instanceof AppError) return false;
          throw error;
        }
      },
      context: (ctx): Context => createContext(ctx.extra.viewer ?? null, services),
      // graphql-ws, unlike Apollo, leaves request errors without a code: parse and validation errors
      // arrive in onError, variable coercion errors as path-less errors of the result.
      onError: (_ctx, _id, _payload, errors) =>
        errors.map((e) => formatError(withDefaultCode(e, 'GRAPHQL_VALIDATION_FAILED'), e)),
      onNext: (_ctx, _id, _payload, _args, result) =>
        result.errors
          ? { ...result, errors: result.errors.map((e) => formatError(e.path ? e.toJSON() : withDefaultCode(e, 'BAD_USER_INPUT'), e)) }
          : result,
    },
    wsServer,
  );

  const apollo = new ApolloServer<Context>({
    gateway: new CompiledExecution(schema),
    ...protection,
    formatError,
    parseOptions: { maxTokens: MAX_QUERY_TOKENS },
    includeStacktraceInErrorResponses: false,
    plugins: [
      ...protection.plugins,
      // Apollo's default cache-control plugin wraps every field's resolver to compute cache hints no one
      // reads here (no CDN in front): a quarter of a long list's CPU time.
      ApolloServerPluginCacheControlDisabled(),
      // Traces for a federation gateway in front of us, which we do not have; installed by default, it
      // costs every request a hook call that finds nothing to do.
      ApolloServerPluginInlineTraceDisabled(),
      ApolloServerPluginDrainHttpServer({ httpServer }),
      {
        requestDidStart: async () => ({
          didResolveOperation: async ({ document, request, operationName }) => {
            const tooCostly = queryCostError(schema, document, request.variables, operationName, config.queryMaxCost);
            if (tooCostly) throw tooCostly;
          },
        }),
      },
      { serverWillStart: async () => ({ drainServer: async () => wsCleanup.dispose() }) },
    ],
  });
  await apollo.start();

  /** Who is asking, from the request's API key; a bad key fails the whole request (401). */
  const contextOf = async (req: http.IncomingMessage): Promise<Context> => {
    try {
      return createContext((await keys.authenticate(req.headers.authorization)) ?? null, services);
    } catch (error) {
      if (isServiceOutage(error)) {
        throw new GraphQLError(SERVICE_UNAVAILABLE_MESSAGE, { extensions: { code: 'SERVICE_UNAVAILABLE', http: { status: 503 } } });
      }
      if (!(error instanceof AppError)) throw error;
      throw new GraphQLError(error.message, { extensions: { code: error.code, http: { status: 401 } } });
    }
  };
  const contextRefusal = (error: GraphQLError, status: number): RequestError => ({
    status,
    body: { errors: [formatError(error.toJSON(), error)] as RequestError['body']['errors'] },
  });
  app.use(
    GRAPHQL_PATH,
    rateLimited,
    graphqlUploadExpress({ maxFileSize: MAX_UPLOAD_BYTES, maxFiles: 1, maxFieldSize: config.maxBodyBytes }),
    express.json({ limit: config.maxBodyBytes }),
    expressMiddleware(apollo, { context: ({ req }) => contextOf(req) }),
  );
  app.use('/images', rateLimited);
  app.use('/exports', rateLimited);
  app.use(imageDownloads(services));
  app.use(weightDownloads(services));
  app.use(await playground()); // the web page at `/`
  app.use(((error, _req, res, _next) => {
    const { status, body } = failedBeforeGraphql(error);
    res.status(status).json(body);
  }) satisfies ErrorRequestHandler);

  await new Promise<void>((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(config.port, config.host, resolve);
  });
  const url = apiUrl(config.host, (httpServer.address() as AddressInfo).port);
  log.info({ url }, 'GraphQL API listening');
  return {
    url,
    stop: async () => {
      await apollo.stop(); // drains HTTP requests and closes WebSocket subscriptions
      wsServer.close();
      httpServer.closeAllConnections();
    },
  };
}

/** express's `res.append` on node's response, one function for every request rather than a closure each. */
function appendHeader(this: http.ServerResponse, name: string, value: string | string[]): http.ServerResponse {
  return this.appendHeader(name, value);
}

/** The GraphQL endpoint of a server listening on `host` (all interfaces: this machine's name for itself). */
export function apiUrl(host: string, port: number): string {
  return `http://${host === '0.0.0.0' || host === '::' ? 'localhost' : host}:${port}${GRAPHQL_PATH}`;
}

function withDefaultCode(error: GraphQLError, code: string): GraphQLFormattedError {
  const formatted = error.toJSON();
  return { ...formatted, extensions: { code, ...formatted.extensions } };
}

/**
 * Errors raised before GraphQL runs (a body over the size limit, malformed JSON or multipart) as a
 * GraphQL-shaped JSON body: express's default handler would answer HTML with a stack trace.
 */
function requestErrors({ log }: Services): (error: unknown) => RequestError {
  return (error) => {
    const status: number = typeof (error as { status?: unknown })?.status === 'number' ? (error as { status: number }).status : 500;
    const known = status === 413 ? 'PAYLOAD_TOO_LARGE' : status >= 400 && status < 500 ? 'BAD_REQUEST' : undefined;
    if (!known) log.error({ err: error }, 'request failed before GraphQL');
    return {
      status,
      body: {
        errors: [
          known
            ? { message: status === 413 ? 'Request body too large' : 'Malformed request', extensions: { code: known } }
            : { message: 'Internal server error', extensions: { code: 'INTERNAL_SERVER_ERROR' } },
        ],
      },
    };
  };
}
