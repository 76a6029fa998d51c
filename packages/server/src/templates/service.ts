import { listTemplates, NsError, parseTemplateRef, TEMPLATE_NAME_RE, unregisterTemplate, type TemplateInfo } from '@nullspace/runtime';
import type { BuildContexts } from './contexts.js';
import type { BuildEvent, BuildRequest, TemplateBuilds } from './builds.js';
import type { NormalizedSpec } from './plan.js';
import { normalizeBuildRequest, type TemplateBuildInput } from './request.js';

/**
 * Templates as the API sees them: the built-in recipe builds (base) and the templates built from a
 * Dockerfile, an image or an SDK recipe, by name and version; uploads of build contexts; builds.
 */
export class TemplateService {
  constructor(
    private readonly cacheDir: string,
    /** The template `ref` checked against this host (HostContext.template). */
    private readonly lookup: (ref: string) => TemplateInfo,
    /** Whether this host can start sandboxes of a template. */
    private readonly compatible: (t: TemplateInfo) => boolean,
    readonly contexts: BuildContexts,
    private readonly builds: TemplateBuilds,
  ) {}

  list(): Array<TemplateInfo & { compatible: boolean }> {
    return listTemplates(this.cacheDir)
      .map((t) => ({ ...t, compatible: this.compatible(t) }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  get(ref: string): TemplateInfo & { compatible: boolean } {
    const { name } = parseTemplateRef(ref);
    if (!TEMPLATE_NAME_RE.test(name)) throw new NsError('template_not_found', `template ${JSON.stringify(ref)} not found`, { details: { template: ref } });
    const t = this.list().find((x) => x.name === name);
    if (!t) throw new NsError('template_not_found', `template ${name} not found`, { details: { template: ref } });
    if (ref === name) return t;
    // a given version: only if it is still registered and its files are there
    try {
      return { ...this.lookup(ref), compatible: true };
    } catch (err) {
      if (err instanceof NsError && err.code === 'template_incompatible') return { ...t, compatible: false };
      throw err;
    }
  }

  delete(name: string): void {
    if (name === 'base') throw new NsError('template_exists', 'base is the built-in template: rebuild it with `nullspace template build base`, it cannot be deleted', { details: { template: 'base' } });
    if (!TEMPLATE_NAME_RE.test(name)) throw new NsError('template_not_found', `template ${JSON.stringify(name)} not found`, { details: { template: name } });
    if (this.builds.isBuilding(name)) throw new NsError('template_build_in_progress', `template ${name} is being built: delete it once the build ended`, { details: { template: name } });
    if (!unregisterTemplate(this.cacheDir, name)) throw new NsError('template_not_found', `template ${name} not found`, { details: { template: name } });
  }

  /** Checks a build request before anything starts (its errors are plain 4xx answers, not a stream). */
  prepare(body: TemplateBuildInput): BuildRequest & { warnings: string[] } {
    const req = normalizeBuildRequest(body, {
      contextDir: (id) => this.contexts.dir(id),
      isTemplate: (name) => listTemplates(this.cacheDir).some((t) => t.name === name),
    });
    if (req.name === 'base') throw new NsError('template_exists', 'base is the built-in template (nullspace template build base), not one a build may make a version of: choose another name', { details: { field: 'name', template: 'base' } });
    if (this.builds.isBuilding(req.name)) throw new NsError('template_build_in_progress', `template ${req.name} is being built already`, { details: { template: req.name } });
    if ('template' in req.spec.from) {
      const t = this.lookup(req.spec.from.template);
      const baseDisk = t.diskSizeMiB ?? t.image.diskSizeMiB;
      if (req.diskSizeMiB !== undefined && req.diskSizeMiB < baseDisk) {
        throw new NsError('invalid_build_spec', `a template's disk (${req.diskSizeMiB} MiB) cannot be smaller than its base's (template ${t.name}: ${baseDisk} MiB)`, {
          details: { field: 'diskSizeMiB', minimum: baseDisk },
        });
      }
    }
    return req;
  }

  build(req: BuildRequest, emit: (e: BuildEvent) => void, signal: AbortSignal): Promise<TemplateInfo> {
    return this.builds.build(req, emit, signal);
  }
}

export type { NormalizedSpec };
