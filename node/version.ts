import { readFileSync } from 'node:fs'

// the app bundle (packaging/app-bundle.ts) defines the version at build time;
// from sources it is read from package.json
declare const GATEMESH_VERSION: string | undefined

/** The gatemesh version. */
export const VERSION: string = typeof GATEMESH_VERSION === 'string'
  ? GATEMESH_VERSION
  : JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version
