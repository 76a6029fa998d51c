/** Step-wise progress with elapsed times, for long operations such as template builds. */
export type LogFn = (line: string) => void;

export class Progress {
  private readonly started = Date.now();
  constructor(private readonly prefix: string, private readonly log: LogFn) {}

  info(msg: string): void {
    this.log(`[${this.prefix}] ${msg}`);
  }

  async step<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const t0 = Date.now();
    this.log(`[${this.prefix}] ${name} ...`);
    try {
      const result = await fn();
      this.log(`[${this.prefix}] ${name} done (${fmt(Date.now() - t0)}, total ${fmt(Date.now() - this.started)})`);
      return result;
    } catch (err) {
      this.log(`[${this.prefix}] ${name} FAILED after ${fmt(Date.now() - t0)}`);
      throw err;
    }
  }
}

function fmt(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}
