// Builds the dashboard page into dist/ under fixed names (index.html,
// app.js, app.css): runner/dashboard/src/assets.rs embeds exactly these.
import { defineConfig, type Plugin } from "vite";

const EXPECTED = ["app.css", "app.js", "index.html"];

// Fails the build if it would emit any other file, which the binary
// would not serve.
function onlyTheEmbeddedFiles(): Plugin {
  return {
    name: "ferrobeam-only-embedded-files",
    apply: "build",
    writeBundle(_options, bundle) {
      const names = Object.keys(bundle).sort();
      if (names.join() !== EXPECTED.join()) {
        throw new Error(
          `the build emits ${names.join(", ")}; assets.rs embeds ${EXPECTED.join(", ")}`,
        );
      }
    },
  };
}

// `npm run dev` serves the page with hot reload and forwards the API to a
// running job server's dashboard.
const backend = process.env.FERROBEAM_DASHBOARD ?? "http://127.0.0.1:8081";

export default defineConfig({
  base: "/",
  plugins: [onlyTheEmbeddedFiles()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsDir: "",
    target: "es2020",
    cssCodeSplit: false,
    modulePreload: { polyfill: false },
    rolldownOptions: {
      output: {
        entryFileNames: "app.js",
        chunkFileNames: "app-[name].js",
        assetFileNames: "app[extname]",
      },
    },
  },
  server: {
    proxy: { "/api": backend, "/metrics": backend },
  },
});
