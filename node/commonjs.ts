/**
 * The exports of a CommonJS package loaded with a dynamic `import()`:
 * Node's import names them, but in the app bundle (esbuild) the package
 * exports only `default` (its module.exports), which Node's import has too.
 */
export function commonJs<T extends object> (mod: T): T {
  return (mod as T & { default?: T }).default ?? mod
}
