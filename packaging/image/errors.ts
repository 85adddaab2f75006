/** Errors of building and flashing agent images. Match on `code`. */
export class ImageError extends Error {
  readonly code: string = 'ERR_IMAGE'
  override readonly name: string = 'ImageError'
}

/**
 * A native module in the production dependencies has no prebuilt binary for
 * the image's architecture. The image would crash on the device the first
 * time the module loads, so the build stops instead.
 */
export class NoPrebuildError extends ImageError {
  override readonly code = 'ERR_NO_PREBUILD'
  override readonly name = 'NoPrebuildError'
  readonly package: string
  constructor (pkg: string, message: string, options?: ErrorOptions) {
    super(message, options)
    this.package = pkg
  }
}

/** A native binary in the image is not an ELF for the image's architecture. */
export class WrongArchitectureError extends ImageError {
  override readonly code = 'ERR_WRONG_ARCH'
  override readonly name = 'WrongArchitectureError'
  readonly file: string
  constructor (file: string, message: string, options?: ErrorOptions) {
    super(message, options)
    this.file = file
  }
}

/** The Node.js runtime package for the target could not be fetched or is unusable. */
export class NodeRuntimeError extends ImageError {
  override readonly code = 'ERR_NODE_RUNTIME'
  override readonly name = 'NodeRuntimeError'
}

/** An image archive is not a gatemesh image, or holds an entry that must not be written. */
export class ImageArchiveError extends ImageError {
  override readonly code = 'ERR_IMAGE_ARCHIVE'
  override readonly name = 'ImageArchiveError'
  readonly entry: string | undefined
  constructor (message: string, entry?: string, options?: ErrorOptions) {
    super(message, options)
    this.entry = entry
  }
}

/** The directory given to `flash --root` does not look like a Linux root filesystem for this image. */
export class FlashTargetError extends ImageError {
  override readonly code = 'ERR_FLASH_TARGET'
  override readonly name = 'FlashTargetError'
}

/** A native module the image compiles from source (no prebuilt binaries exist) could not be built for the image's CPU. */
export class NativeBuildError extends ImageError {
  override readonly code = 'ERR_NATIVE_BUILD'
  override readonly name = 'NativeBuildError'
  readonly package: string
  constructor (pkg: string, message: string, options?: ErrorOptions) {
    super(message, options)
    this.package = pkg
  }
}
