// Creates (or promotes) an admin account and prints a new API key for it.
// Usage: npm run admin:create -- --email admin@example.com
// Works whether or not `npm start` is running: it reuses a running embedded PostgreSQL.
import 'reflect-metadata';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { ConfigError, loadConfig } from '../src/config';
import { AppError } from '../src/services/errors';
import { createAdmin } from '../src/services/users';
import { openDatabase } from '../src/storage/database';
import { startEmbeddedPostgres } from '../src/storage/embedded-postgres';

const { values } = parseArgs({ options: { email: { type: 'string' } } });
if (!values.email) {
  console.error('usage: npm run admin:create -- --email <address>');
  process.exit(2);
}

try {
  const config = loadConfig();
  const log = pino({ level: 'warn' });
  const postgres = config.databaseUrl
    ? undefined
    : await startEmbeddedPostgres(path.join(config.dataDir, 'postgres'), log);
  const db = await openDatabase(config.databaseUrl ?? postgres!.url, log, { preparedStatements: config.preparedStatements });
  try {
    const { user, secret } = await createAdmin(db, values.email);
    console.log(`Admin ${user.email} ready. API key (shown once):\n${secret}`);
  } finally {
    await db.destroy();
    await postgres?.stop();
  }
} catch (error) {
  if (!(error instanceof ConfigError || error instanceof AppError)) throw error;
  console.error(error.message);
  process.exit(1);
}
