import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { OsUser, PostgresBinaries } from './postgres-server';

// PostgreSQL refuses to run as root, so a platform running as root runs it as the `postgres` OS user, who must
// reach the binaries and the cluster. A checkout (node_modules included) or data folder may lie where only root
// can enter (under /root, in a mkdtemp folder): the platform then gives that user what it needs in a folder of
// its own, and never changes the permissions of folders it does not own.

/** The platform's own folder, for what the postgres user must reach when the platform runs as root. */
export const ROOT_HOME = '/var/lib/bigdiffusion';
const CLUSTERS = path.join(ROOT_HOME, 'clusters');
const USER = 'postgres';

const run = promisify(execFile);

/** The postgres OS user, created when the system has none. */
export async function postgresUser(): Promise<OsUser> {
  const lookUp = async () => ({ uid: Number((await run('id', ['-u', USER])).stdout), gid: Number((await run('id', ['-g', USER])).stdout) });
  try {
    return await lookUp();
  } catch {
    // Another process may be creating it at the same moment: its useradd or ours fails, and the look-up decides.
    await run('groupadd', ['--system', USER]).catch(() => undefined);
    await run('useradd', ['--system', '--gid', USER, '--no-create-home', USER]).catch(() => undefined);
    return lookUp().catch(() => {
      throw new Error(`PostgreSQL cannot run as root and there is no "${USER}" OS user to run it as, nor could one be created (groupadd, useradd): create one, or run the platform as another user`);
    });
  }
}

/**
 * The binaries, reachable by `user`: hard links (copies where links cannot be made) of the installation's folder in
 * ROOT_HOME/postgres-<version>, made once per version. Built under a temporary name and renamed into place,
 * so processes starting together neither see a half-made folder nor make two.
 */
export async function binariesFor(user: OsUser, installation: PostgresBinaries, version: string): Promise<PostgresBinaries> {
  const native = path.dirname(path.dirname(installation.initdb)); // <native>/bin/initdb
  const home = path.join(ROOT_HOME, `postgres-${version}`);
  const inHome = (file: string) => path.join(home, path.relative(native, file));
  const binaries = { initdb: inHome(installation.initdb), postgres: inHome(installation.postgres) };
  await ownFolder(ROOT_HOME);
  await mustReach(user, home);
  if (await exists(binaries.postgres)) return binaries;
  const partial = `${home}.partial-${randomUUID()}`;
  await linkTree(native, partial);
  await fs.rename(partial, home).catch(async (error) => {
    await fs.rm(partial, { recursive: true, force: true });
    if (!(await exists(binaries.postgres))) throw error; // else another process was first
  });
  return binaries;
}

/**
 * The folder the cluster of `dataDir` lives in. That is `dataDir` itself when `user` can reach it. When it
 * cannot and no cluster is there yet, the cluster lives in ROOT_HOME/clusters/<id>/data and `dataDir` becomes a
 * link to it (the link first: a start that stops midway leaves a link the next one follows). An existing
 * cluster out of reach stops the start with one line that says why and what to do.
 */
export async function clusterDirFor(user: OsUser, dataDir: string): Promise<{ dir: string; moved: boolean }> {
  await fs.mkdir(path.dirname(dataDir), { recursive: true });
  const found = await fs.lstat(dataDir).catch(() => undefined);
  const location = found?.isSymbolicLink() ? path.resolve(path.dirname(dataDir), await fs.readlink(dataDir)) : dataDir;
  if (path.dirname(path.dirname(location)) === CLUSTERS) {
    await ownFolder(path.dirname(location)); // one of ours, its folder made again should it be gone
    await mustReach(user, location);
    return { dir: location, moved: true };
  }
  await fs.mkdir(path.dirname(location), { recursive: true });
  const dir = path.join(await fs.realpath(path.dirname(location)), path.basename(location));
  const closed = await closedOnTheWay(user, dir);
  if (!closed) return { dir, moved: false };
  const empty = !found || (found.isDirectory() && (await fs.readdir(dataDir)).length === 0);
  if (!empty) {
    throw new Error(`PostgreSQL runs as the OS user "${USER}" when the platform runs as root, and cannot enter ${closed} on the way to the cluster in ${dir}: move the cluster where that user can reach it, or run the platform as another user`);
  }
  if (found) await fs.rmdir(dataDir);
  const home = path.join(CLUSTERS, randomUUID());
  await fs.symlink(path.join(home, 'data'), dataDir);
  await ownFolder(home);
  await mustReach(user, path.join(home, 'data'));
  return { dir: path.join(home, 'data'), moved: true };
}

/** Deletes a cluster moved to ROOT_HOME/clusters along with the link to it; any other path is left alone. */
export async function removeMovedCluster(dataDir: string): Promise<void> {
  const target = await fs.readlink(dataDir).catch(() => undefined);
  if (!target || path.dirname(path.dirname(target)) !== CLUSTERS) return;
  await fs.rm(path.dirname(target), { recursive: true, force: true });
  await fs.rm(dataDir, { force: true });
}

/** The first folder on the way to `target` (itself excluded) that `user` may not enter, if any. */
async function closedOnTheWay(user: OsUser, target: string): Promise<string | undefined> {
  const folders: string[] = [];
  for (let dir = path.dirname(target); !folders.includes(dir); dir = path.dirname(dir)) folders.unshift(dir);
  for (const dir of folders) {
    const { uid, gid, mode } = await fs.stat(dir);
    // The kernel asks the owner's bits of the owner, the group's of the group, and the others' of anyone else.
    const search = uid === user.uid ? mode & 0o100 : gid === user.gid ? mode & 0o010 : mode & 0o001;
    if (!search) return dir;
  }
  return undefined;
}

async function mustReach(user: OsUser, target: string): Promise<void> {
  const closed = await closedOnTheWay(user, target);
  if (closed) {
    throw new Error(`PostgreSQL runs as the OS user "${USER}" when the platform runs as root, and cannot enter ${closed} on the way to ${target}: open it to that user, or run the platform as another user`);
  }
}

/** Creates a folder of ours (and its missing parents) that others may enter, whatever the umask. */
async function ownFolder(dir: string): Promise<void> {
  const created = await fs.mkdir(dir, { recursive: true });
  if (!created) return; // it existed: not ours to change
  for (let made = dir; made.length >= created.length; made = path.dirname(made)) await fs.chmod(made, 0o755);
}

/** `from`'s tree as hard links in `to` (copies where links cannot be made), its symlinks as symlinks. */
async function linkTree(from: string, to: string): Promise<void> {
  await fs.mkdir(to);
  await fs.chmod(to, 0o755);
  for (const entry of await fs.readdir(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    const target = path.join(to, entry.name);
    if (entry.isDirectory()) await linkTree(source, target);
    else if (entry.isSymbolicLink()) await fs.symlink(await fs.readlink(source), target);
    else {
      await fs.link(source, target).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'EXDEV' && error.code !== 'EPERM') throw error; // another file system, or one without links
        return fs.copyFile(source, target);
      });
    }
  }
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}
