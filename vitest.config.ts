import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['packages/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // a test that leaves a sandbox of the suite's server alive fails, naming itself
    setupFiles: ['test/leak-guard.ts'],
    // real VMs under software emulation: generous per-test limits, few at a time (2-core CI machines)
    testTimeout: 180_000,
    hookTimeout: 300_000,
    pool: 'forks',
    poolOptions: { forks: { minForks: 1, maxForks: 2 } },
    fileParallelism: true,
    reporters: ['default'],
  },
});
