import type { IncomingMessage, ServerResponse } from 'node:http';
import { HeaderMap, type ApolloServer, type BaseContext } from '@apollo/server';
import { GraphQLError } from 'graphql';
import getRawBody from 'raw-body';

/**
 * POST /graphql with a JSON body, nearly every request the API gets, served on node:http without
 * express: express's router, body-parser and `res.send` (which hashes every body for an ETag) were a
 * quarter of a cheap query's CPU. The body is read and parsed as body-parser would (the same limit,
 * strict JSON, the same 413 and 400 answers) and handed to Apollo's `executeHTTPGraphQLRequest`, which
 * does everything else as it does under express (CSRF prevention, errors and their HTTP statuses).
 * Other requests to /graphql (multipart uploads, GET, other content types or encodings) go to express.
 */
export function isJsonGraphqlPost(req: IncomingMessage, path: string): boolean {
  return (
    req.method === 'POST' &&
    (req.url === path || req.url?.startsWith(`${path}?`) === true) &&
    JSON_UTF8.test(req.headers['content-type'] ?? '') &&
    (req.headers['content-encoding'] ?? 'identity').toLowerCase() === 'identity'
  );
}

/** `application/json`, with no charset or UTF-8 (body-parser's default): other charsets go to express. */
const JSON_UTF8 = /^application\/json\s*(;\s*charset\s*=\s*("?)utf-8\2\s*)?$/i;

/** What a request that never reached GraphQL gets, with the status it carries (413, 400, 500). */
export type RequestError = { status: number; body: { errors: { message: string; extensions: { code: string } }[] } };

export interface GraphqlPostOptions<TContext extends BaseContext> {
  apollo: ApolloServer<TContext>;
  maxBodyBytes: number;
  /** Who is asking; throws a GraphQLError with an HTTP status (a bad key: 401) to refuse the request. */
  context: (req: IncomingMessage) => Promise<TContext>;
  /** The answer to a request that failed before GraphQL, from its error's status (set by raw-body). */
  requestError: (error: unknown) => RequestError;
  /** The answer to a request whose context was refused: what Apollo would answer, with no pipeline run. */
  contextRefusal: (error: GraphQLError, status: number) => RequestError;
}

export async function serveJsonGraphqlPost<TContext extends BaseContext>(
  req: IncomingMessage,
  res: ServerResponse,
  { apollo, maxBodyBytes, context, requestError, contextRefusal }: GraphqlPostOptions<TContext>,
): Promise<void> {
  let body: unknown;
  try {
    body = parseStrictJson(await readBody(req, maxBodyBytes));
  } catch (error) {
    // Like body-parser, read the rest of the request off before answering: closing a socket with
    // unread data resets it, and the client would lose the answer.
    req.resume();
    if (!req.complete) await new Promise((resolve) => req.once('end', resolve).once('close', resolve));
    return sendRequestError(res, requestError(error));
  }
  // Who is asking, before Apollo's pipeline: a refused key costs no more than the key check.
  let asking: TContext;
  try {
    asking = await context(req);
  } catch (error) {
    const status = error instanceof GraphQLError ? (error.extensions.http as { status?: unknown } | undefined)?.status : undefined;
    if (typeof status === 'number') return sendRequestError(res, contextRefusal(error as GraphQLError, status));
    throw error;
  }
  const headers = new HeaderMap();
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined) headers.set(name, Array.isArray(value) ? value.join(', ') : value);
  }
  const query = req.url!.indexOf('?');
  const search = query >= 0 ? req.url!.slice(query) : '';
  const response = await apollo.executeHTTPGraphQLRequest({
    httpGraphQLRequest: { method: 'POST', headers, search, body },
    context: async () => asking,
  });
  res.statusCode = response.status ?? 200;
  for (const [name, value] of response.headers) res.setHeader(name, value);
  if (response.body.kind === 'complete') {
    res.setHeader('content-length', Buffer.byteLength(response.body.string));
    res.end(response.body.string);
    return;
  }
  for await (const chunk of response.body.asyncIterator) res.write(chunk);
  res.end();
}

/** No body: undefined, which Apollo answers with its own 400, as it does under express. */
async function readBody(req: IncomingMessage, limit: number): Promise<string | undefined> {
  const length = req.headers['content-length'];
  if (req.headers['transfer-encoding'] === undefined && (length === undefined || length === '0')) return undefined;
  return getRawBody(req, { length, limit, encoding: 'utf-8' });
}

/** body-parser's `strict`: a JSON object or array, nothing else; a syntax error is a 400. */
function parseStrictJson(text: string | undefined): unknown {
  if (text === undefined) return undefined;
  const first = /^[\x20\x09\x0a\x0d]*(.)/.exec(text)?.[1];
  if (first !== '{' && first !== '[') throw Object.assign(new SyntaxError('not a JSON object or array'), { status: 400 });
  try {
    return JSON.parse(text);
  } catch (error) {
    throw Object.assign(error as Error, { status: 400 });
  }
}

export function sendRequestError(res: ServerResponse, { status, body }: RequestError): void {
  const text = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader('content-type', 'application/json; charset=utf-8');
  res.setHeader('content-length', Buffer.byteLength(text));
  res.end(text);
}
