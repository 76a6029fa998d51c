import { defineConfig } from 'vite';

// The console is static files the server serves at / (packages/server/src/api/console.ts): hashed
// names under /assets (cached for good), index.html (revalidated). JSX is Preact's.
export default defineConfig({
  base: '/',
  build: { outDir: 'dist', assetsDir: 'assets', emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 1024 },
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
});
