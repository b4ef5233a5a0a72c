import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import readline from 'node:readline';

/** `npm start` as a real child process (in `cwd`, with `env` added): pino logs on stdout. */
export class ServerProcess {
  private readonly child: ChildProcess;
  private readonly lines: Record<string, unknown>[] = [];
  private readonly waiters: (() => void)[] = [];

  constructor(env: Record<string, string>, cwd = process.cwd()) {
    this.child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd,
      env: { ...process.env, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', BUNDLED_BASE_MODEL: 'tiny-random', ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    readline.createInterface({ input: this.child.stdout! }).on('line', (line) => {
      try {
        this.lines.push(JSON.parse(line));
      } catch {
        return; // not a log line
      }
      this.waiters.splice(0).forEach((wake) => wake());
    });
    this.child.once('exit', () => this.waiters.splice(0).forEach((wake) => wake()));
  }

  /** The first log line with this message (and whatever else `matches` asks), waiting for it. */
  async logged(msg: string, matches: (line: Record<string, any>) => boolean = () => true): Promise<Record<string, any>> {
    for (;;) {
      const line = this.lines.find((l) => l.msg === msg && matches(l));
      if (line) return line;
      if (this.child.exitCode !== null) throw new Error(`server exited (${this.child.exitCode}) before "${msg}"`);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** Every log line with this message so far. */
  loggedSoFar(msg: string): Record<string, any>[] {
    return this.lines.filter((l) => l.msg === msg);
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Ctrl-C (SIGINT), or another signal; resolves with the exit code. */
  interrupt(signal: NodeJS.Signals = 'SIGINT'): Promise<number | null> {
    const exited = new Promise<number | null>((resolve) => this.child.once('exit', (code) => resolve(code)));
    this.child.kill(signal);
    return exited;
  }

  kill(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The processes whose parent is `parent`, from /proc. */
export async function childrenOf(parent: number): Promise<number[]> {
  const children: number[] = [];
  for (const name of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await fs.readFile(`/proc/${name}/stat`, 'utf8').catch(() => null); // null: it exited meanwhile
    if (stat && Number(stat.split(') ')[1].split(' ')[1]) === parent) children.push(Number(name));
  }
  return children;
}
