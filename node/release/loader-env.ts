/** Where the agent runs from, as the image's loader tells it (environment). */
export interface LoaderInfo {
  installDir: string
  /** the release the loader started */
  release: string
}

/** The loader's environment, when the agent runs under it (packaging/image/loader.ts exports these). */
export function loaderFromEnv (env: NodeJS.ProcessEnv = process.env): LoaderInfo | undefined {
  if (env.GATEMESH_LOADER !== '1' || env.GATEMESH_INSTALL_DIR == null || env.GATEMESH_RELEASE == null) return undefined
  return { installDir: env.GATEMESH_INSTALL_DIR, release: env.GATEMESH_RELEASE }
}
