import { NsError } from '@nullspace/runtime';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { DELTA_TYPE } from '../fleet/transfer.js';
import { requireGrant, templateSubject } from '../fleet/grant.js';
import type { AppDeps } from './deps.js';

/**
 * Artifacts between servers (docs/api.md "Artifacts"): a snapshot's manifest and layer files, and a
 * template's manifest and files, read with the API key or with a grant for that one snapshot or
 * template (routes marked `config.grant`: the API key hook leaves a `Grant` to them), and the
 * imports of a snapshot or a template from another server (API key only).
 */
export function isGrantRoute(req: FastifyRequest): boolean {
  return (req.routeOptions.config as { grant?: unknown } | undefined)?.grant === true;
}

/** The grant of a request, when it presents one (`Authorization: Grant <grant>`). */
export function grantOf(req: FastifyRequest): string | undefined {
  return /^Grant (.+)$/.exec(req.headers.authorization ?? '')?.[1];
}

const SnapshotId = Type.String({ pattern: '^snap_[0-9a-z]{16}$' });
const LayerId = Type.String({ pattern: '^lyr_[0-9a-z]{16}$' });
const TemplateName = Type.String({ pattern: '^[a-z0-9][a-z0-9-]{0,62}$' });
const Source = Type.String({ pattern: '^https?://[^/?#@]+$', maxLength: 300 });
const Grant = Type.String({ minLength: 1, maxLength: 512 });

export const artifactRoutes =
  (deps: AppDeps, keyDigestHex: () => string | undefined): FastifyPluginAsync =>
  async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const { artifacts, templateArtifacts } = deps;
    /** A request that came with a grant (the hook let it through unchecked) must hold one for `subject` (a snapshot id, `template:<name>`). */
    const authorize = (req: FastifyRequest, subject: string) => {
      const grant = grantOf(req);
      if (grant !== undefined) requireGrant(keyDigestHex(), grant, subject);
    };

    // (the hosts' protocol: documented in docs/api.md "Artifacts", left out of the OpenAPI document)
    app.get(
      '/artifacts/snapshots/:id/manifest',
      { config: { grant: true }, schema: { hide: true, summary: "A snapshot's layers with their sizes and sha256", params: Type.Object({ id: SnapshotId }) } },
      async (req) => {
        authorize(req, req.params.id);
        return artifacts.manifest(req.params.id);
      },
    );
    app.get(
      '/artifacts/layers/:layerId',
      {
        config: { grant: true },
        schema: {
          hide: true,
          summary: "A layer file of a snapshot's manifest (with base: what differs from that layer)",
          params: Type.Object({ layerId: LayerId }),
          querystring: Type.Object({ snapshot: SnapshotId, base: Type.Optional(LayerId) }, { additionalProperties: false }),
        },
      },
      async (req, reply) => {
        authorize(req, req.query.snapshot);
        const { stream, bytes, delta } = await artifacts.openLayer(req.query.snapshot, req.params.layerId, req.query.base);
        if (delta) return reply.type(DELTA_TYPE).send(stream);
        return reply.header('content-length', bytes).type('application/octet-stream').send(stream);
      },
    );
    app.post(
      '/artifacts/import',
      {
        schema: {
          hide: true,
          summary: "Import a snapshot from another server (only the layers this one lacks are fetched)",
          body: Type.Object(
            { snapshotId: SnapshotId, source: Source, grant: Grant },
            { additionalProperties: false },
          ),
        },
      },
      // (the API key only: the hook refuses a grant here)
      async (req) => artifacts.import(req.body),
    );

    // templates: the files of a template's current version in this server's cache
    app.get(
      '/artifacts/templates/:name/manifest',
      { config: { grant: true }, schema: { hide: true, summary: "A template's files with their sizes and sha256", params: Type.Object({ name: TemplateName }) } },
      async (req) => {
        authorize(req, templateSubject(req.params.name));
        return templateArtifacts.manifest(req.params.name);
      },
    );
    app.get(
      '/artifacts/templates/:name/files/*',
      { config: { grant: true }, schema: { hide: true, summary: "A file of a template's manifest (its path relative to the cache dir)", params: Type.Object({ name: TemplateName, '*': Type.String() }) } },
      async (req, reply) => {
        authorize(req, templateSubject(req.params.name));
        const { stream, bytes } = await templateArtifacts.openFile(req.params.name, req.params['*']);
        return reply.header('content-length', bytes).type('application/octet-stream').send(stream);
      },
    );
    app.post(
      '/artifacts/templates/import',
      {
        schema: {
          hide: true,
          summary: 'Import a template from another server (its files this cache lacks)',
          body: Type.Object(
            { name: TemplateName, source: Type.Union([Source, Type.Literal('control')], { description: 'A server URL, or "control": a runtime host\'s own control plane' }), grant: Grant },
            { additionalProperties: false },
          ),
        },
      },
      // (the API key only: the hook refuses a grant here)
      async (req) => {
        // a runtime host fetches from its control plane at the URL it knows it by (the control plane
        // does not know how its hosts reach it)
        let source = req.body.source;
        if (source === 'control') {
          const control = deps.hostMode?.controlUrl;
          if (!control) throw new NsError('bad_request', 'source "control" is for runtime hosts: this server has no control plane', { details: { field: 'source' } });
          source = control;
        }
        return templateArtifacts.import({ ...req.body, source });
      },
    );
  };
