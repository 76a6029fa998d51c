import pino from 'pino';

export type Logger = pino.Logger;

/** Structured logs with fixed keys (`sandboxId`, `op`, `ms`, `err`). */
export function createLogger(level: string): Logger {
  return pino({ level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime });
}
