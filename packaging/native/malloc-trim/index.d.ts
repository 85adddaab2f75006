/** glibc's malloc_trim(0): true when free memory was handed back to the kernel. */
export function trim (): boolean
/** Whether this build can trim (glibc); elsewhere trim() does nothing. */
export function supported (): boolean
