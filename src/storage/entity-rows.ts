import type { DataSource, EntityMetadata, EntityTarget, ObjectLiteral, ValueTransformer } from 'typeorm';

/**
 * Rows of an entity's table, selected whole (`SELECT *`), as the entity's objects without TypeORM's
 * hydration, which was a tenth of a list's CPU (bench/RESULTS.md). A row's columns already are the
 * entity's properties (no entity renames a column: checked on first use); only columns with a transformer
 * (bigints read as numbers) change. The objects are plain, not instances of the entity's class, which
 * nothing here tells apart.
 */
export function asEntities<T extends ObjectLiteral>(metadata: EntityMetadata, rows: ObjectLiteral[]): T[] {
  const transformed = transformedColumns(metadata);
  if (transformed.length > 0) {
    for (const row of rows) for (const { name, transformers } of transformed) row[name] = transformers.reduceRight((value, t) => t.from(value), row[name]);
  }
  return rows as T[];
}

const columnsByEntity = new WeakMap<EntityMetadata, { name: string; transformers: ValueTransformer[] }[]>();

function transformedColumns(metadata: EntityMetadata) {
  let columns = columnsByEntity.get(metadata);
  if (!columns) {
    const renamed = metadata.columns.find((column) => column.databaseName !== column.propertyName);
    if (renamed) throw new Error(`${metadata.name}.${renamed.propertyName} is column ${renamed.databaseName}: rows need TypeORM's hydration`);
    columns = metadata.columns
      .filter((column) => column.transformer)
      .map((column) => ({ name: column.propertyName, transformers: [column.transformer!].flat() }));
    columnsByEntity.set(metadata, columns);
  }
  return columns;
}

/** Runs `sql`, which selects whole rows of `entity`'s table, and hands them back as its objects (asEntities). */
export async function queryEntities<T extends ObjectLiteral>(db: DataSource, entity: EntityTarget<T>, sql: string, params: unknown[]): Promise<T[]> {
  return asEntities<T>(db.getMetadata(entity), await db.query(sql, params));
}
