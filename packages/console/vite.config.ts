import { defineConfig } from 'vite';

// The console is static files the server serves at / (packages/server/src/api/console.ts): hashed
// names under /assets (cached for good), index.html (revalidated). JSX is Preact's. (Vite 6: it
// runs on every Node 20, the repository's floor; Vite 7+ needs 20.19.)
export default defineConfig({
  base: '/',
  build: { outDir: 'dist', assetsDir: 'assets', emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 1024 },
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
});
