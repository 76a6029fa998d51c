import fs from 'node:fs/promises';
import path from 'node:path';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { NsError } from '@nullspace/runtime';

/**
 * The web console (packages/console, built by `npm run build` into its dist/): static files at `/`
 * (index.html) and `/assets/<name>` (content-hashed names), and nothing else. The console routes
 * by the URL's fragment (`/#/sandboxes/...`), so there is no fallback route that could shadow /v1,
 * the E2B routes at the root, or preview hosts (those are picked out by Host before any route).
 * The files hold no data: they are served without the API key, which the console then asks for
 * and sends as a header to /v1 (docs/operations.md "Web console").
 */

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
  '.ico': 'image/x-icon',
};

/** The page may load only its own files and talk only to its own origin. */
const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  // xterm.js sets inline styles (its renderer's <style> element and element styles)
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/** Routes of the console: marked so that the API key check lets them through (app.ts). */
export const CONSOLE_ROUTE = { publicAsset: true } as const;

export function isConsoleRoute(req: FastifyRequest): boolean {
  return (req.routeOptions.config as { publicAsset?: unknown } | undefined)?.publicAsset === true;
}

async function readOrNull(file: string): Promise<Buffer | null> {
  try {
    return await fs.readFile(file);
  } catch {
    return null;
  }
}

function security(reply: FastifyReply): FastifyReply {
  return reply.header('x-content-type-options', 'nosniff').header('referrer-policy', 'no-referrer').header('x-frame-options', 'DENY');
}

export const consoleRoutes =
  (dir: string): FastifyPluginAsync =>
  async (app) => {
    const opts = { config: CONSOLE_ROUTE as Record<string, unknown>, schema: { hide: true } };

    app.get('/', opts, async (_req, reply) => {
      const html = await readOrNull(path.join(dir, 'index.html'));
      if (!html) throw new NsError('route_not_found', `the web console is not built (no ${path.join(dir, 'index.html')}): run npm run build`);
      // revalidated each time: it names the current build's assets
      return security(reply).header('content-type', 'text/html; charset=utf-8').header('cache-control', 'no-cache').header('content-security-policy', CSP).send(html);
    });

    app.get<{ Params: { '*': string } }>('/assets/*', opts, async (req, reply) => {
      const name = req.params['*'];
      const type = TYPES[path.extname(name)];
      // Vite's output is flat, with content hashes in the names: anything else is not ours
      const file = /^[A-Za-z0-9_.-]{1,200}$/.test(name) && !name.startsWith('.') && type ? await readOrNull(path.join(dir, 'assets', name)) : null;
      if (!file) throw new NsError('route_not_found', `no route GET ${req.url.split('?')[0]}`);
      return security(reply).header('content-type', type).header('cache-control', 'public, max-age=31536000, immutable').send(file);
    });
  };
