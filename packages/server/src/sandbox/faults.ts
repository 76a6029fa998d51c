import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log.js';

/**
 * Test-only fault injection (NULLSPACE_FAULT_INJECTION=<name>): the server process dies at a named
 * point (`crash`), a named step fails (`is`), or it waits at a named point until a test lets it go
 * (`wait`: "<name>-waits" writes `<data dir>/fault-<name>.waiting` and waits for `fault-<name>.go`).
 * The names are listed in docs/ARCHITECTURE.md.
 */
export class Faults {
  constructor(
    private readonly active: string | undefined,
    private readonly dataDir: string,
    private readonly log: Logger,
  ) {}

  /** Whether fault `name` is the one injected. */
  is(name: string): boolean {
    return this.active === name;
  }

  /** The server process dies here, as with kill -9. */
  crash(name: string): void {
    if (this.active === name) {
      this.log.warn({ fault: name }, 'fault injection: killing the server process');
      process.kill(process.pid, 'SIGKILL');
    }
  }

  /**
   * Holds here while `<name>-waits` is injected, until the test creates `fault-<name>.go` (which then
   * lets every later pass through), or `stop()` says the server is closing.
   */
  async wait(name: string, stop: () => boolean): Promise<void> {
    if (this.active !== `${name}-waits`) return;
    const go = path.join(this.dataDir, `fault-${name}.go`);
    if (fs.existsSync(go)) return;
    this.log.warn({ fault: name }, 'fault injection: waiting for the test');
    fs.writeFileSync(path.join(this.dataDir, `fault-${name}.waiting`), '');
    while (!fs.existsSync(go) && !stop()) await new Promise((r) => setTimeout(r, 50));
  }
}
