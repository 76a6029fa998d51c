/** Where tests put their data dirs: on the reflink-capable storage, short enough for unix sockets. */
export const TEST_ROOT = process.env.NULLSPACE_TEST_ROOT ?? '/var/lib/nullspace/tmp';

/** Pids of QEMU processes whose command line mentions `needle` (e.g. a data dir). */
export { qemuPidsMatching as leftoverQemu } from '@nullspace/runtime';
