import { spawn, type ChildProcess } from 'node:child_process';
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

  /** The first log line with this message, waiting for it. */
  async logged(msg: string): Promise<Record<string, any>> {
    for (;;) {
      const line = this.lines.find((l) => l.msg === msg);
      if (line) return line;
      if (this.child.exitCode !== null) throw new Error(`server exited (${this.child.exitCode}) before "${msg}"`);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** Ctrl-C; resolves with the exit code. */
  interrupt(): Promise<number | null> {
    const exited = new Promise<number | null>((resolve) => this.child.once('exit', (code) => resolve(code)));
    this.child.kill('SIGINT');
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
