import { PassThrough } from 'node:stream';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { errorMessage, type TemplateInfo } from '@nullspace/runtime';
import { clientGone } from '../agentio.js';
import { NsError, publicCode } from '../errors.js';
import type { AppDeps } from './deps.js';
import { TemplateBuildBody, TemplateNameParams, TemplateRefParams, TemplateView } from './schemas.js';

/** How the API shows a template (docs/api.md "Templates"; schema TemplateView). */
export function templateView(t: TemplateInfo & { compatible?: boolean }) {
  return {
    name: t.name,
    version: t.version ?? 1,
    ref: `${t.name}:${t.version ?? 1}`,
    cpuCount: t.vcpus,
    memoryMiB: t.memoryMiB,
    diskSizeMiB: t.diskSizeMiB ?? t.image.diskSizeMiB,
    createdAt: t.builtAt,
    from: t.build?.from ?? `recipe ${t.image.name}`,
    startCmd: t.build?.start?.cmd ?? null,
    ready: (t.build?.start?.ready as { port?: number; cmd?: string; file?: string } | null | undefined) ?? null,
    envs: t.defaults?.envs ?? {},
    user: t.defaults?.user ?? null,
    workdir: t.defaults?.workdir ?? null,
    exposedPorts: t.build?.exposedPorts ?? [],
    buildMs: t.build?.buildMs ?? (t.bootMs || null),
    steps: t.build?.steps ?? 0,
    compatible: t.compatible ?? true,
    accel: t.requirements.accel,
    cpuModel: t.requirements.cpuModel,
  };
}

export const templateRoutes =
  (deps: AppDeps): FastifyPluginAsync =>
  async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const { templates } = deps;

    app.get('/templates', { schema: { summary: 'Templates built on this host (every name at its current version)', response: { 200: Type.Object({ templates: Type.Array(TemplateView) }) } } }, async () => ({
      templates: templates.list().map(templateView),
    }));

    app.get(
      '/templates/:ref',
      { schema: { summary: 'One template: `name` (its current version) or `name:version`', params: TemplateRefParams, response: { 200: TemplateView } } },
      async (req) => templateView(templates.get(req.params.ref)),
    );

    app.delete(
      '/templates/:name',
      { schema: { summary: 'Unregister a template, every version (its sandboxes and snapshots keep working; its files go with `cache prune` once unused)', params: TemplateNameParams } },
      async (req, reply) => {
        templates.delete(req.params.name);
        return reply.status(204).send();
      },
    );

    // the build context: a tar archive streamed as the body, whatever its content type
    await app.register(async (raw) => {
      raw.removeAllContentTypeParsers();
      raw.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
      raw.withTypeProvider<TypeBoxTypeProvider>().post(
        '/templates/contexts',
        {
          schema: {
            summary: 'Upload a build context (a tar archive, gzip allowed): the files COPY steps take',
            response: { 201: Type.Object({ contextId: Type.String(), files: Type.Integer(), bytes: Type.Integer(), sha256: Type.String() }) },
          },
        },
        async (req, reply) => reply.status(201).send(await templates.contexts.receive(req.raw)),
      );
    });

    app.post(
      '/templates',
      {
        schema: {
          summary: 'Build a template',
          description:
            'The response is application/x-ndjson, one event per line: {"type":"step","step","of","instruction","cached"}, {"type":"log","step","stream","data":base64}, {"type":"info","message"}, {"type":"stepDone","step","ms"}, then {"type":"done","template"} or {"type":"error","code","message","step"?,"exitCode"?,"output"?}. A request that cannot start a build is a plain JSON error.',
          body: TemplateBuildBody,
        },
      },
      async (req, reply) => {
        const prepared = templates.prepare(req.body);
        const out = new PassThrough();
        const line = (e: unknown) => out.write(JSON.stringify(e) + '\n');
        for (const message of prepared.warnings) line({ type: 'info', message });
        const gone = clientGone(reply.raw);
        void templates
          .build(prepared, line, gone)
          .then(
            (t) => line({ type: 'done', template: templateView(t) }),
            (err: unknown) => {
              const e = err instanceof NsError ? err : new NsError('internal', errorMessage(err));
              const code = publicCode(e.code);
              const d = e.details as { step?: number; exitCode?: number | null; output?: string };
              line({ type: 'error', code, message: code === 'internal' && e.code !== 'internal' ? `internal error: ${e.message}` : e.message, step: d.step, exitCode: d.exitCode, output: d.output });
            },
          )
          .finally(() => out.end());
        return reply.type('application/x-ndjson').send(out);
      },
    );
  };
