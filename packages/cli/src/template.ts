import {
  buildImage,
  buildTemplate,
  detectAccel,
  hostProfile,
  listTemplates,
  loadRecipe,
  Progress,
  type TemplateInfo,
} from '@nullspace/runtime';
import type { Config } from '@nullspace/server';

export interface TemplateBuildArgs {
  recipe: string;
  name?: string;
  memoryMiB?: number;
  vcpus?: number;
  diskSizeMiB?: number;
  force?: boolean;
}

/** Builds a template (image, then the booted snapshot), printing steps and elapsed times. */
export async function templateBuild(config: Config, args: TemplateBuildArgs, log: (line: string) => void): Promise<TemplateInfo> {
  const name = args.name ?? args.recipe;
  const progress = new Progress(`template ${name}`, log);
  const { recipe } = loadRecipe(config.imagesDir, args.recipe);
  const image = await buildImage({
    name: args.recipe,
    imagesDir: config.imagesDir,
    agentDir: config.agentDir,
    cacheDir: config.cacheDir,
    mirror: config.debianMirror,
    ...(args.diskSizeMiB !== undefined ? { diskSizeMiB: args.diskSizeMiB } : {}),
    progress,
  });
  const accel = await progress.step('accelerator', () =>
    detectAccel({ forced: config.accel, cacheDir: config.cacheDir, kvmDevice: config.kvmDevice, probe: { kernel: image.kernel, initrd: image.initrd }, log }),
  );
  progress.info(`accelerator: ${accel.accel} (${accel.reason})`);
  const profile = await hostProfile({ accel: accel.accel, cpuModel: config.cpuModel });
  return buildTemplate({
    name,
    image,
    profile,
    cacheDir: config.cacheDir,
    memoryMiB: args.memoryMiB ?? recipe.defaults.memoryMiB,
    vcpus: args.vcpus ?? recipe.defaults.vcpus,
    progress,
    force: args.force ?? false,
  });
}

export function templateList(config: Config): TemplateInfo[] {
  return listTemplates(config.cacheDir);
}
