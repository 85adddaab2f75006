/**
 * Signed model bundles: the public API of `packaging/bundle`.
 *
 *   const built = await buildBundle({ modelDir, name, version, signer, out })
 *   const v = await verifyBundle(zipPathOrBytes, { fleetPublicKey })
 *   const { manifest, dir, digest } = await unpackBundle(zipPath, destDir, { fleetPublicKey, limits })
 *
 * Every rejection is a BundleError subclass with a stable `code` and, when it
 * concerns one archive entry, that entry's path in `entry`.
 */
export { buildBundle, publisherOf, MODEL_DIR, CONFIG_FILE, type BuildBundleInit, type BuiltBundle } from './build.ts'
export {
  verifyBundle, parseManifest, scanArchive, MODEL_BUNDLE, MANIFEST_FILE, SIGNATURE_FILE,
  type ArchiveKind, type FileSink, type ListedFile, type VerifyBundleOptions, type VerifiedArchive, type VerifiedBundle
} from './verify.ts'
export { unpackBundle, type UnpackedBundle } from './unpack.ts'
export { inspectBundle, type BundleInfo } from './inspect.ts'
export { DEFAULT_LIMITS, resolveLimits, type BundleLimits } from './archive.ts'
export { writeBundleZip, type ZipSource, type WrittenZip } from './zip-write.ts'
export {
  chunkCount, chunkRange, formatIndex, indexFromTail, parseIndex, tailOffsetOf, verifyChunk,
  MAX_CHUNK_SIZE, type ChunkIndex
} from './chunk-index.ts'
export { ResumableSha256 } from './sha256-midstate.ts'
export * from './errors.ts'
