import { defineConfig } from "vitest/config";
import preact from "@preact/preset-vite";

// The console is served by swarmdesk itself from web/dist (embedded in the
// binary): same origin as the API, a strict CSP (no inline script).
export default defineConfig({
  plugins: [preact()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // The polyfill would be an inline script, which the CSP forbids.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    sourcemap: false,
  },
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
  },
});
