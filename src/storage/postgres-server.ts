import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';

/** The PostgreSQL programs of one installation. */
export interface PostgresBinaries {
  initdb: string;
  postgres: string;
}

/** The OS user PostgreSQL runs as when it is not us: PostgreSQL refuses to run as root. */
export interface OsUser {
  uid: number;
  gid: number;
}

/**
 * Creates a cluster in `dir` (absent or empty) whose superuser `user` logs in with `password`, run as
 * `runAs` when given. The password passes through a file beside the cluster that only its reader can open.
 */
export async function initCluster(
  binaries: PostgresBinaries,
  dir: string,
  superuser: { user: string; password: string },
  runAs: OsUser | undefined,
  log: Logger,
): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  const passwordFile = path.join(path.dirname(dir), `.${path.basename(dir)}-password-${process.pid}`);
  await fs.writeFile(passwordFile, `${superuser.password}\n`, { mode: 0o600 });
  try {
    if (runAs) {
      await fs.chown(dir, runAs.uid, runAs.gid);
      await fs.chown(passwordFile, runAs.uid, runAs.gid);
    }
    // The C locale with UTF-8 text: the same sorting and encoding on every machine, whatever its environment says.
    const args = ['--pgdata', dir, '--username', superuser.user, '--pwfile', passwordFile, '--auth', 'scram-sha-256', '--encoding', 'UTF8', '--locale', 'C'];
    const child = spawn(binaries.initdb, args, { ...runAs, stdio: ['ignore', 'pipe', 'pipe'] });
    const output = collect(child.stdout, child.stderr, log);
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', resolve);
    });
    if (code !== 0) throw new Error(`initdb failed (exit code ${code}): ${output.tail()}`);
  } finally {
    await fs.rm(passwordFile, { force: true });
  }
}

export interface PostgresServer {
  /** Fast shutdown (SIGINT); resolves once the postmaster has exited, at once when it already has. */
  stop(): Promise<void>;
}

/**
 * Runs the postmaster on the cluster in `dir`, listening on localhost:`port`, and resolves once it accepts
 * connections. Should this process exit without stop(), the postmaster is told to shut down too.
 */
export async function startServer(
  binaries: PostgresBinaries,
  dir: string,
  port: number,
  runAs: OsUser | undefined,
  log: Logger,
): Promise<PostgresServer> {
  const child = spawn(binaries.postgres, ['-D', dir, '-p', String(port)], { ...runAs, stdio: ['ignore', 'pipe', 'pipe'] });
  const output = collect(child.stdout, child.stderr, log);
  const shutDown = () => child.kill('SIGINT');
  process.on('exit', shutDown);
  let ended = false;
  let failure: Error | undefined; // the program could not be started at all
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', (error) => {
      failure = error;
      resolve();
    });
  }).then(() => {
    ended = true;
    process.off('exit', shutDown);
  });

  // postmaster.pid's 8th line turns to "ready" once connections are accepted (whatever language it logs in).
  while (!ended && (await clusterStatus(dir, child.pid)) !== 'ready') await new Promise((resolve) => setTimeout(resolve, 50));
  if (ended) throw new Error(`PostgreSQL stopped before accepting connections: ${failure?.message ?? output.tail()}`);
  return {
    stop: async () => {
      if (!ended) child.kill('SIGINT');
      await exited;
    },
  };
}

/** The port of the postmaster running on `dir` (postmaster.pid's 4th line), when one runs. */
export async function runningClusterPort(dir: string): Promise<number | undefined> {
  const lines = await pidFile(dir);
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!pid || !port) return undefined;
  return alive(pid) ? port : undefined; // else a stale file from a crash: PostgreSQL itself cleans it up on start
}

async function clusterStatus(dir: string, pid: number | undefined): Promise<string | undefined> {
  const lines = await pidFile(dir);
  return Number(lines[0]) === pid ? lines[7]?.trim() : undefined;
}

async function pidFile(dir: string): Promise<string[]> {
  return fs.readFile(path.join(dir, 'postmaster.pid'), 'utf8').then(
    (text) => text.split('\n'),
    () => [],
  );
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Logs a program's output at debug level and keeps its last lines for an error message. */
function collect(stdout: NodeJS.ReadableStream | null, stderr: NodeJS.ReadableStream | null, log: Logger): { tail(): string } {
  const lines: string[] = [];
  const take = (chunk: Buffer) => {
    for (const line of String(chunk).split('\n').filter(Boolean)) {
      log.debug({ postgres: line });
      lines.push(line);
      if (lines.length > 5) lines.shift();
    }
  };
  stdout?.on('data', take);
  stderr?.on('data', take);
  return { tail: () => lines.join(' | ') || 'no output' };
}
