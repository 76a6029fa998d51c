import fs from 'node:fs';
import path from 'node:path';
import { NsError } from '../errors.js';
import { Hasher } from '../hash.js';
import { readJson } from '../fsutil.js';
import type { KernelInfo } from './kernel.js';

/** Bump when the way images are assembled changes, so that cached images are rebuilt. */
export const IMAGE_BUILDER_VERSION = 1;

export interface Recipe {
  name: string;
  description: string;
  debootstrap: { suite: string; variant: string; packages: string[] };
  prune: string[];
  /** Accounts added to the root filesystem (`base`: an unprivileged `user` with passwordless sudo). */
  users?: RecipeUser[];
  kernel: { package: string; modules: string[]; cmdline: string };
  defaults: { memoryMiB: number; vcpus: number; diskSizeMiB: number };
}

export interface RecipeUser {
  name: string;
  uid: number;
  home: string;
  shell: string;
  /** Passwordless sudo (a file in /etc/sudoers.d). */
  sudo?: boolean;
}

export const TEMPLATE_NAME_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** Loads images/<name>/recipe.json. `name` must be a plain slug: it becomes part of paths. */
export function loadRecipe(imagesDir: string, name: string): { recipe: Recipe; dir: string } {
  if (!TEMPLATE_NAME_RE.test(name)) throw new NsError('invalid_template_name', `template name "${name}" must match ${TEMPLATE_NAME_RE}`);
  const dir = path.join(imagesDir, name);
  const file = path.join(dir, 'recipe.json');
  if (!fs.existsSync(file)) throw new NsError('template_not_found', `no recipe for template "${name}" (${file} does not exist)`);
  const recipe = readJson<Recipe>(file);
  if (recipe.name !== name) throw new NsError('invalid_recipe', `${file}: name is "${recipe.name}", expected "${name}"`);
  return { recipe, dir };
}

/** Identity of the debootstrap output: what it was asked to install. */
export function debootstrapHash(recipe: Recipe): string {
  return new Hasher().add('builder', IMAGE_BUILDER_VERSION).add('debootstrap', recipe.debootstrap).hex();
}

/**
 * Identity of the agent binary: exactly what `go build` compiles (the Go sources outside tests, and
 * go.mod/go.sum). Build outputs, test files and docs lying in the directory do not count.
 */
export function agentHash(agentDir: string): string {
  return new Hasher().addTree('agent', agentDir, (rel) => !isAgentSource(rel)).hex(12);
}

export function isAgentSource(rel: string): boolean {
  if (rel === 'go.mod' || rel === 'go.sum') return true;
  if (rel.split('/').some((part) => part === 'testdata' || part === 'bin' || part.startsWith('.') || part.startsWith('_'))) return false;
  return rel.endsWith('.go') && !rel.endsWith('_test.go');
}

/** Identity of a whole image: recipe dir (recipe, init, overlay), agent, kernel. */
export function imageHash(recipeDir: string, agentVersion: string, kernel: KernelInfo): string {
  return new Hasher()
    .add('builder', IMAGE_BUILDER_VERSION)
    .addTree('recipe', recipeDir)
    .add('agent', agentVersion)
    .add('kernel', `${kernel.release} ${kernel.packageVersion}`)
    .hex();
}
