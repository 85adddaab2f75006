/**
 * Agent releases: the image's app, modules and (when it changes) Node
 * runtime as a fleet-signed bundle, published and pulled like a model.
 *
 *   const built = await buildRelease({ arch, version, out, signer, base })
 *   const v = await verifyRelease(zip, { fleetPublicKey })
 *   const r = await installRelease({ file: zip, releasesDir, fleetPublicKey, arch })
 */
export { buildRelease, packRelease, baseNodeVersion, RELEASE_STEPS, type BuiltRelease, type PackReleaseInit, type ReleaseBuildInit, type ReleaseBuildResult } from './build.ts'
export { verifyRelease, verifyAnyBundle, readReleaseManifest, type VerifiedRelease, type VerifiedAnyBundle } from './verify.ts'
export { installRelease, pruneReleases, readReleaseInfo, linkedRelease, type InstallReleaseInit, type InstalledRelease } from './install.ts'
export { parseReleaseManifest, RELEASE_BUNDLE, RELEASE_KIND, TYP_RELEASE_MANIFEST, RELEASE_PATH_PATTERN, type ReleaseManifest, type ReleaseFile } from './manifest.ts'
export * from './errors.ts'
