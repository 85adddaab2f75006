// Entry of the app bundle (packaging/app-bundle.ts); bin/gatemesh.js is the one for sources.
import { main } from './main.ts'

process.exitCode = await main(process.argv.slice(2))
