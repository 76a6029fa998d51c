import path from 'node:path';

/** nullspace's home on this machine (NULLSPACE_HOME, as scripts/setup.sh and the server read it). */
export const NS_HOME = process.env.NULLSPACE_HOME || '/var/lib/nullspace';
/** Built images and templates (NULLSPACE_CACHE_DIR, as the server reads it). */
export const CACHE_DIR = process.env.NULLSPACE_CACHE_DIR || path.join(NS_HOME, 'cache');
/**
 * Where tests put their data dirs: on the reflink-capable storage, short enough for unix sockets;
 * scripts/test.sh checks it for leftovers at the end (scripts/leaks.sh).
 */
export const TEST_ROOT = process.env.NULLSPACE_TEST_ROOT || path.join(NS_HOME, 'tmp');

/** Pids of QEMU processes whose command line mentions `needle` (e.g. a data dir). */
export { qemuPidsMatching as leftoverQemu } from '@nullspace/runtime';
