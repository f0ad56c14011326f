import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The app talks to the Holdfast reference server directly (it answers CORS) at the URL
 *  in HOLDFAST_URL, read per request by app/page.jsx. */
export default {
  reactStrictMode: true,
  distDir: process.env.NEXT_DIST_DIR || '.next',
  // This example lives inside the Holdfast repository, which has its own lockfile.
  turbopack: { root: dirname(fileURLToPath(import.meta.url)) },
};
