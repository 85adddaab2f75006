import { openModel } from '../models/runner.ts'
import type { CheckRequest, CheckResult } from './model-check.ts'

/**
 * The process a model check runs in (see model-check.ts): load the model
 * with its runtime, run it once on zeros, report what it declares, exit.
 * Whatever the model does to this process's memory goes with it.
 */
process.once('message', (request: CheckRequest) => {
  const answer = async (): Promise<CheckResult> => {
    try {
      const runner = await openModel({ format: request.format, path: request.path, onnxBackend: request.onnxBackend, maxBatch: 1 })
      const result: CheckResult = { ok: true, inputs: runner.inputs, outputs: runner.outputs, backend: runner.backend }
      await runner.dispose()
      return result
    } catch (err: any) {
      return { ok: false, code: err.code ?? 'ERR_MODEL_FORMAT', message: String(err.message ?? err).slice(0, 2000) }
    }
  }
  void answer().then(result => {
    process.send!(result, () => { process.exit(0) })
  })
})

// the caller is gone (killed mid-check): nobody wants the answer
process.once('disconnect', () => { process.exit(1) })
