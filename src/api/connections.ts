import { ArgsType, Field, Int, ObjectType, type ClassType } from 'type-graphql';
import { ModelVersion } from '../entities';
import { MAX_PAGE_SIZE, type CreatedFilter, type Page, type PageRequest } from '../services/pagination';

/** Lists are pages (Relay-style connections): `first` and `after` pick one. */
export const FIRST_DESCRIPTION = `Page size, 1-${MAX_PAGE_SIZE}; default 20.`;
export const AFTER_DESCRIPTION = 'The endCursor of the page before; absent: from the newest.';

/** `first` and `after`, the arguments of every connection. */
@ArgsType()
export class PageArgs implements PageRequest {
  @Field(() => Int, { nullable: true, description: FIRST_DESCRIPTION })
  first?: number | null;

  @Field(() => String, { nullable: true, description: AFTER_DESCRIPTION })
  after?: string | null;
}

/** A connection's filter by when its rows were made. */
@ArgsType()
export class CreatedArgs implements CreatedFilter {
  @Field(() => Date, { nullable: true, description: 'Only rows made at or after this instant.' })
  createdAfter?: Date | null;

  @Field(() => Date, { nullable: true, description: 'Only rows made before this instant.' })
  createdBefore?: Date | null;
}

@ObjectType()
export class PageInfo {
  @Field(() => Boolean)
  hasNextPage: boolean;

  @Field(() => String, { nullable: true, description: "Pass as `after` for the next page; null on an empty page." })
  endCursor: string | null;
}

export interface Connection<T> {
  edges: { cursor: string; node: T }[];
  nodes: T[];
  pageInfo: PageInfo;
  totalCount: number | Promise<number>;
}

/** The `<Name>Connection` and `<Name>Edge` types of a node type. */
export function connectionType<T extends object>(Node: ClassType<T>, name: string): ClassType<Connection<T>> {
  @ObjectType(`${name}Edge`)
  class Edge {
    @Field(() => String)
    cursor: string;

    @Field(() => Node)
    node: T;
  }

  @ObjectType(`${name}Connection`, { description: 'Newest first.' })
  class NodeConnection implements Connection<T> {
    @Field(() => [Edge])
    edges: Edge[];

    @Field(() => [Node], { description: 'The edges’ nodes, for clients that need no cursors.' })
    nodes: T[];

    @Field(() => PageInfo)
    pageInfo: PageInfo;

    // Not simple (schema.ts): its value is a promise, which a resolver awaits and an inline read would not.
    @Field(() => Int, { simple: false, description: 'In the whole list, every page, filters applied; counted only when asked for.' })
    totalCount: number | Promise<number>;
  }
  return NodeConnection;
}

export function toConnection<T>(page: Page<T>): Connection<T> {
  return new PageConnection(page);
}

/**
 * A page as its connection. `totalCount` is a getter, so the count runs only when a query selects it; on the
 * class's prototype, not in an object literal: a getter closure made per object kept every list's rows alive
 * through V8's young-generation collections (bench/RESULTS.md, Apollo's gateway context).
 */
class PageConnection<T> implements Connection<T> {
  readonly edges: { cursor: string; node: T }[];
  readonly nodes: T[];
  readonly pageInfo: PageInfo;
  readonly #countAll: () => Promise<number>;

  constructor({ nodes, cursors, hasNextPage, countAll }: Page<T>) {
    this.edges = nodes.map((node, i) => ({ cursor: cursors[i], node }));
    this.nodes = nodes;
    this.pageInfo = { hasNextPage, endCursor: cursors.at(-1) ?? null };
    this.#countAll = countAll;
  }

  get totalCount(): Promise<number> {
    return this.#countAll();
  }
}

/** Two fields list versions (`modelVersions`, `Model.versions`): one type for both. */
export const ModelVersionConnection = connectionType(ModelVersion, 'ModelVersion');
