// Builds the console into the Python package (src/armillary/web/static), which `armillary serve` serves at /.
// Assets get content hashes in their names (served with a year-long cache); index.html is served no-cache.
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

export default defineConfig({
  plugins: [react()],
  build: {
    outDir: "../src/armillary/web/static",
    emptyOutDir: true,
    assetsDir: "assets",
    chunkSizeWarningLimit: 600,
  },
  server: { proxy: { "/api": "http://127.0.0.1:8000" } }, // `npm run dev` next to `armillary serve`
});
