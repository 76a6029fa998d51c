import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { NsError, type ErrorCode } from './errors.js';

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Bytes to write to stdin. */
  input?: string | Buffer;
  /** Kill the command after this many ms. */
  timeoutMs?: number;
  /** Called with each chunk of combined output (for progress). */
  onOutput?: (chunk: string) => void;
  /** Error code used when the command fails. */
  errorCode?: ErrorCode;
  /** Open descriptors handed to the command as its fds 3, 4, ... */
  fds?: number[];
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a host command without a shell; throws an NsError carrying the tail of its stderr on failure. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe', ...(opts.fds ?? [])] }) as ChildProcessWithoutNullStreams; // 0-2 are pipes
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = opts.timeoutMs
      ? setTimeout(() => {
          timedOut = true;
          child.kill('SIGKILL');
        }, opts.timeoutMs)
      : undefined;
    child.stdout.on('data', (b: Buffer) => {
      out.push(b);
      opts.onOutput?.(b.toString());
    });
    child.stderr.on('data', (b: Buffer) => {
      err.push(b);
      opts.onOutput?.(b.toString());
    });
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(new NsError(opts.errorCode ?? 'command_failed', `${cmd}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const stdout = Buffer.concat(out).toString();
      const stderr = Buffer.concat(err).toString();
      if (code === 0) return resolve({ stdout, stderr });
      const tail = (stderr || stdout).trim().split('\n').slice(-8).join('\n');
      const why = timedOut ? `timed out after ${opts.timeoutMs} ms` : signal ? `killed by ${signal}` : `exit code ${code}`;
      const message = `${cmd} ${args.slice(0, 3).join(' ')}${args.length > 3 ? ' ...' : ''}: ${why}${tail ? `: ${tail}` : ''}`;
      reject(new NsError(/No space left/i.test(tail) ? 'no_space' : (opts.errorCode ?? 'command_failed'), message));
    });
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}

/** True when `cmd` is found on PATH. */
export async function haveCommand(cmd: string): Promise<boolean> {
  try {
    await run('sh', ['-c', 'command -v "$0"', cmd]);
    return true;
  } catch {
    return false;
  }
}
