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

export function toConnection<T>({ nodes, cursors, hasNextPage, countAll }: Page<T>): Connection<T> {
  return {
    edges: nodes.map((node, i) => ({ cursor: cursors[i], node })),
    nodes,
    pageInfo: { hasNextPage, endCursor: cursors.at(-1) ?? null },
    // A getter: fields are read off the object only when the query selects them.
    get totalCount() {
      return countAll();
    },
  };
}

/** Two fields list versions (`modelVersions`, `Model.versions`): one type for both. */
export const ModelVersionConnection = connectionType(ModelVersion, 'ModelVersion');
