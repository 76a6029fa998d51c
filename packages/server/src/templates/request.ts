import { NsError } from '@nullspace/runtime';
import type { BuildRequest } from './builds.js';
import { resolveBuildSpec } from './dockerfile.js';
import { contextFile, type NormalizedSpec } from './plan.js';
import { ARCHIVE_PREFIX, TEMPLATE_NAME_RE } from './spec.js';

/** The body of `POST /v1/templates` (its JSON schema: api/schemas.ts TemplateBuildBody). */
export interface TemplateBuildInput {
  name: string;
  spec: unknown;
  contextId?: string | undefined;
  buildArgs?: Record<string, string> | undefined;
  cpuCount?: number | undefined;
  memoryMiB?: number | undefined;
  diskSizeMiB?: number | undefined;
  noCache?: boolean | undefined;
}

/**
 * A build request checked and normalized before anything is built: the name, the spec (validated,
 * a Dockerfile parsed with the recipe's steps after it: spec.ts, dockerfile.ts), the context and every
 * COPY source in it (sources with glob characters must match something). Its errors are plain 4xx
 * answers; what is worth saying but no error comes back as `warnings`.
 */
export function normalizeBuildRequest(
  body: TemplateBuildInput,
  opts: { contextDir: (id: string) => string; isTemplate: (name: string) => boolean },
): BuildRequest & { warnings: string[] } {
  if (!TEMPLATE_NAME_RE.test(body.name)) {
    throw new NsError('validation_failed', `name must match ${TEMPLATE_NAME_RE} (got ${JSON.stringify(body.name).slice(0, 80)})`, { details: { field: 'name' } });
  }
  const resolved = resolveBuildSpec(body.spec, { buildArgs: body.buildArgs ?? {}, isTemplate: opts.isTemplate });
  const spec: NormalizedSpec = { from: resolved.from, steps: resolved.steps, start: resolved.start };
  const needsContext = spec.steps.some((s) => s.type === 'copy') || 'archive' in spec.from;
  if (needsContext && body.contextId === undefined) {
    throw new NsError('invalid_build_spec', 'the build copies files (COPY, or an image archive), but no build context was uploaded (contextId)', { details: { field: 'contextId' } });
  }
  const dir = body.contextId !== undefined ? opts.contextDir(body.contextId) : undefined;
  if (dir) {
    // every COPY source is in the context, before anything is built (a glob must match something)
    spec.steps.forEach((s, i) => {
      if (s.type === 'copy' && !/[*?[]/.test(s.src)) contextFile(dir, s.src, i + 1);
    });
    if ('archive' in spec.from) contextFile(dir, spec.from.archive.slice(ARCHIVE_PREFIX.length), 0);
  }
  return {
    name: body.name,
    spec,
    contextDir: dir,
    vcpus: body.cpuCount,
    memoryMiB: body.memoryMiB,
    diskSizeMiB: body.diskSizeMiB,
    noCache: body.noCache,
    warnings: resolved.warnings,
  };
}
