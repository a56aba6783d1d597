// Bundles the web chat page into dist/: src/app.js (with the SDK and the generated
// protobuf code) -> dist/app.js (+ source map), and copies index.html and style.css.
// Run through `npm run build`, which first regenerates src/gen/ from ../proto/tern.proto.
import { build } from 'esbuild';
import { copyFileSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'src');
const dist = join(root, 'dist');

if (!existsSync(join(src, 'gen', 'tern.js'))) {
  console.error('src/gen/tern.js is missing: run `npm run build` (it runs `npm run gen` first)');
  process.exit(1);
}

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

await build({
  entryPoints: [join(src, 'app.js')],
  outfile: join(dist, 'app.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  minify: true,
  sourcemap: true,
  legalComments: 'none',
  logLevel: 'warning',
});

for (const f of ['index.html', 'style.css']) copyFileSync(join(src, f), join(dist, f));
console.log(`built ${dist}: index.html, app.js, style.css`);
