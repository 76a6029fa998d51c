import { NsError, TEMPLATE_NAME_RE } from '@nullspace/runtime';
import type { BuildRequest } from './builds.js';
import { contextPath, type BuildFrom, type BuildStart, type BuildStep, type NormalizedSpec } from './plan.js';

/** The body of `POST /v1/templates` (its JSON schema: api/schemas.ts TemplateBuildBody). */
export interface TemplateBuildInput {
  name: string;
  spec: {
    from?: BuildFrom | undefined;
    dockerfile?: string | undefined;
    steps?: BuildStep[] | undefined;
    start?: BuildStart | undefined;
  };
  contextId?: string | undefined;
  buildArgs?: Record<string, string> | undefined;
  cpuCount?: number | undefined;
  memoryMiB?: number | undefined;
  diskSizeMiB?: number | undefined;
  noCache?: boolean | undefined;
}

/** Turns a Dockerfile into a spec (templates/dockerfile.ts); undefined: none available. */
export type DockerfileParser = (text: string, buildArgs: Record<string, string>) => NormalizedSpec;

let dockerfileParser: DockerfileParser | undefined;

/** Installs the Dockerfile parser (the server does at start). */
export function useDockerfileParser(p: DockerfileParser): void {
  dockerfileParser = p;
}

/**
 * A build request checked and normalized before anything is built: the name, the spec (a Dockerfile
 * parsed, the recipe's steps after it), the context. Its errors are plain 4xx answers.
 */
export function normalizeBuildRequest(body: TemplateBuildInput, contextDir: (id: string) => string): BuildRequest {
  if (!TEMPLATE_NAME_RE.test(body.name)) {
    throw new NsError('validation_failed', `name must match ${TEMPLATE_NAME_RE} (got ${JSON.stringify(body.name).slice(0, 80)})`, { details: { field: 'name' } });
  }
  let from = body.spec.from;
  let steps = [...(body.spec.steps ?? [])];
  let start = body.spec.start;
  if (body.spec.dockerfile !== undefined) {
    if (!dockerfileParser) throw new NsError('invalid_build_spec', 'this server has no Dockerfile parser');
    const parsed = dockerfileParser(body.spec.dockerfile, body.buildArgs ?? {});
    if (from) throw new NsError('invalid_build_spec', 'a spec with a Dockerfile takes its base from the Dockerfile\'s FROM: leave `from` out', { details: { field: 'spec.from' } });
    from = parsed.from;
    steps = [...parsed.steps, ...steps];
    start = body.spec.start ?? parsed.start;
  }
  if (!from) throw new NsError('invalid_build_spec', 'a build needs a base: `from` (a template, an image or an archive) or a Dockerfile', { details: { field: 'spec.from' } });
  const spec: NormalizedSpec = { from, steps, ...(start ? { start } : {}) };
  const needsContext = steps.some((s) => s.type === 'copy') || 'archive' in from;
  if (needsContext && body.contextId === undefined) {
    throw new NsError('invalid_build_spec', 'the build copies files (COPY, or an image archive), but no build context was uploaded (contextId)', { details: { field: 'contextId' } });
  }
  const dir = body.contextId !== undefined ? contextDir(body.contextId) : undefined;
  // every COPY source is in the context, before anything is built
  for (const s of steps) if (s.type === 'copy' && dir) contextPath(dir, s.src);
  if ('archive' in from && dir) contextPath(dir, from.archive.replace(/^ctx:/, ''));
  return {
    name: body.name,
    spec,
    contextDir: dir,
    vcpus: body.cpuCount,
    memoryMiB: body.memoryMiB,
    diskSizeMiB: body.diskSizeMiB,
    noCache: body.noCache,
  };
}
