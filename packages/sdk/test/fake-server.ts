import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** A route of the fake server: answers one request. */
export type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

export interface FakeServer {
  url: string;
  /** `METHOD /path` -> handler; unknown routes answer 404 route_not_found. */
  routes: Map<string, Handler>;
  /** Every request, in order: `METHOD /path`. */
  seen: string[];
  close(): Promise<void>;
}

/** A scripted HTTP server on a loopback port: each test sets what a route answers (no VM: the SDK only). */
export async function startFakeServer(): Promise<FakeServer> {
  const routes = new Map<string, Handler>();
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    const key = `${req.method} ${decodeURIComponent(new URL(req.url!, 'http://x').pathname)}`;
    seen.push(key);
    const route = routes.get(key);
    if (!route) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'route_not_found', message: 'no route' } }));
      return;
    }
    route(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    routes,
    seen,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** The whole body of a request. */
export async function body(req: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export function json(res: http.ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(value));
}

/** A template view as the server answers it (GET /v1/templates/{name}, a build's done event). */
export const TEMPLATE_VIEW = {
  name: 'my-node',
  version: 2,
  ref: 'my-node:2',
  cpuCount: 2,
  memoryMiB: 1024,
  diskSizeMiB: 8192,
  createdAt: '2026-12-05T10:00:00.000Z',
  from: 'template base:1',
  startCmd: 'node server.js',
  ready: { port: 3000 },
  envs: { NODE_ENV: 'production' },
  user: 'user',
  workdir: '/srv/app',
  exposedPorts: [3000],
  buildMs: 4200,
  steps: 5,
  compatible: true,
  accel: 'tcg',
  cpuModel: 'max',
};
