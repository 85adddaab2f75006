import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { checkModel } from '../../packaging/bundle/model-check.ts'
import { ModelSpecError } from '../../packaging/bundle/errors.ts'
import { reconcileSpecs } from '../../packaging/models/specs.ts'
import { concatRows, padRows, sliceRows } from '../../packaging/models/tensor.ts'
import { fixBatch, isTflite } from '../../packaging/models/tflite-file.ts'
import { instancesFromTensors, stackRows } from '../../node/runtime/tensors.ts'
import { decodeTensor, encodeTensor, MAX_TENSOR_ELEMENTS } from '../../protocols/tf-serving/tensor-proto.ts'
import { fixture } from '../helpers/model-fixtures.ts'
import type { TensorSpec } from '../../packaging/manifest.ts'

const root = await mkdtemp(join(tmpdir(), 'gatemesh-model-units-'))
t.teardown(async () => { await rm(root, { recursive: true, force: true }) })

t.test('user specs are checked against the model\'s, each disagreement naming the field', async t => {
  const model: TensorSpec[] = [{ name: 'image', dtype: 'float32', shape: [-1, 28, 28, 1] }, { name: 'mask', dtype: 'int32', shape: [-1, 4] }]
  t.same(reconcileSpecs(model, undefined, 'inputs'), model, 'no spec: the model\'s')
  const labelled = reconcileSpecs([{ name: 'scores', dtype: 'float32', shape: [1, 10] }], [{ name: 'scores', dtype: 'float32', shape: [-1, 10], labels: ['a'] }], 'outputs')
  t.same(labelled, [{ name: 'scores', dtype: 'float32', shape: [-1, 10], labels: ['a'] }], 'labels added; the batch may be left free')
  const reordered = reconcileSpecs(model, [model[1]!, model[0]!], 'inputs')
  t.same(reordered.map(s => s.name), ['image', 'mask'], 'the model\'s order is kept')
  const cases: Array<[TensorSpec[], string, RegExp]> = [
    [[model[0]!], 'inputs', /gives 1 inputs; the model has 2/],
    [[{ ...model[0]!, name: 'img' }, model[1]!], 'inputs[0].name', /no input "img"/],
    [[{ ...model[0]!, dtype: 'float64' }, model[1]!], 'inputs[0].dtype', /is float64; the model's input image is float32/],
    [[{ ...model[0]!, shape: [-1, 28, 28] }, model[1]!], 'inputs[0].shape', /has 3 dimensions/],
    [[model[0]!, { ...model[1]!, shape: [-1, 5] }], 'inputs[1].shape', /dimension 1 is 5/]
  ]
  for (const [given, field, message] of cases) {
    const err = (() => { try { reconcileSpecs(model, given, 'inputs'); return undefined } catch (e) { return e as ModelSpecError } })()
    t.ok(err instanceof ModelSpecError, `${field}: refused`)
    t.equal(err?.field, field)
    t.match(err?.message, message)
  }
  t.same(reconcileSpecs([{ name: 'dense_Dense3', dtype: 'float32', shape: [-1, 2] }], [{ name: 'class', dtype: 'float32', shape: [-1, 2] }], 'outputs', { byPosition: true })[0]!.name, 'class', 'TF.js outputs may be renamed')
})

t.test('TFLite batch fixing reads the flatbuffer safely', async t => {
  const dyn = new Uint8Array(await readFile(fixture('mlp-dyn.tflite')))
  t.ok(isTflite(dyn))
  const fixed = fixBatch(dyn, 8)
  t.equal(fixed.length, dyn.length, 'patched in place, same size')
  t.notSame(Buffer.from(fixed), Buffer.from(dyn), 'the shape signature changed')
  t.same(Buffer.from(dyn), await readFile(fixture('mlp-dyn.tflite')), 'the input is left alone')
  t.throws(() => fixBatch(new TextEncoder().encode('not a model at all'), 1), /no TFL3 identifier/)
  const truncated = dyn.subarray(0, 600)
  t.throws(() => fixBatch(truncated, 1), { name: 'ModelFormatError' }, 'a truncated file is an error, not a crash')
  const garbage = new Uint8Array(dyn)
  new DataView(garbage.buffer).setUint32(0, 0xfffffff0, true)
  t.throws(() => fixBatch(garbage, 1), /outside the file/, 'offsets past the end are refused')
})

t.test('tensor slicing, padding, joining', async t => {
  const x = { dtype: 'float32' as const, shape: [3, 2], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }
  t.same(Array.from(sliceRows(x, 1, 3).data as Float32Array), [3, 4, 5, 6])
  t.same(padRows(sliceRows(x, 2, 3), 4).shape, [4, 2])
  t.same(Array.from(concatRows([sliceRows(x, 0, 1), sliceRows(x, 2, 3)]).data as Float32Array), [1, 2, 5, 6])
  t.same(concatRows([{ dtype: 'string', shape: [1], data: ['a'] }, { dtype: 'string', shape: [1], data: ['b'] }]).data, ['a', 'b'])
})

t.test('TensorProto decoding checks sizes before allocating', async t => {
  const shape = (...d: number[]): { dim: Array<{ size: string }> } => ({ dim: d.map(s => ({ size: String(s) })) })
  t.same(Array.from(decodeTensor({ dtype: 'DT_FLOAT', tensor_shape: shape(2, 2), float_val: [7] }, 'x').data as Float32Array), [7, 7, 7, 7], 'one value fills the shape')
  t.same(decodeTensor({ dtype: 'DT_INT64', tensor_shape: shape(2), int64_val: ['9007199254740993', '-1'] }, 'x').data, BigInt64Array.from([9007199254740993n, -1n]), 'int64 exact')
  t.same(decodeTensor({ dtype: 'DT_STRING', tensor_shape: shape(1), string_val: [Buffer.from('héllo')] }, 'x').data, ['héllo'])
  t.same(Array.from(decodeTensor({ dtype: 'DT_BOOL', tensor_shape: shape(2), bool_val: [true, false] }, 'x').data as Uint8Array), [1, 0])
  const round = decodeTensor(encodeTensor({ dtype: 'float64', shape: [1, 2], data: Float64Array.from([0.1, 1e300]) }), 'x')
  t.same(Array.from(round.data as Float64Array), [0.1, 1e300], 'float64 round trip through tensor_content')
  const refusals: Array<[Record<string, unknown>, RegExp]> = [
    [{ dtype: 'DT_HALF', tensor_shape: shape(1), half_val: [1] }, /x\.dtype: dtype DT_HALF is not supported/],
    [{ dtype: 'DT_FLOAT', tensor_shape: shape(4), float_val: [1, 2] }, /x\.float_val: holds 2 values; shape \[4\] needs 4/],
    [{ dtype: 'DT_FLOAT', tensor_shape: shape(2), tensor_content: Buffer.alloc(7) }, /x\.tensor_content: holds 7 bytes/],
    [{ dtype: 'DT_FLOAT', tensor_shape: shape(1 << 20, 1 << 20), float_val: [1] }, new RegExp(`at most ${MAX_TENSOR_ELEMENTS}`)],
    [{ dtype: 'DT_FLOAT', tensor_shape: { dim: [{ size: '-3' }] } }, /dimension 0 has size -3/],
    [{ dtype: 'DT_FLOAT', tensor_shape: { unknown_rank: true } }, /unknown rank/]
  ]
  for (const [proto, message] of refusals) t.throws(() => decodeTensor(proto, 'x'), message)
})

t.test('gRPC tensors into instances: names, shapes, batches and dtypes checked', async t => {
  const specs: TensorSpec[] = [{ name: 'a', dtype: 'int32', shape: [-1, 2] }, { name: 'b', dtype: 'float32', shape: [-1] }]
  const ok = instancesFromTensors({ a: { dtype: 'float64', shape: [2, 2], data: Float64Array.from([1, 2, 3, 4]) }, b: { dtype: 'float32', shape: [2], data: Float32Array.from([5, 6]) } }, specs)
  t.equal(ok.length, 2)
  t.type(ok[1]!.values[0], Int32Array, 'converted to the model\'s dtype where the values fit')
  t.same(Array.from(ok[1]!.values[0] as Int32Array), [3, 4])
  t.throws(() => instancesFromTensors({ a: { dtype: 'float64', shape: [1, 2], data: Float64Array.from([1.5, 2]) }, b: { dtype: 'float32', shape: [1], data: Float32Array.from([1]) } }, specs), /inputs\.a: expected integers/)
  t.throws(() => instancesFromTensors({ a: { dtype: 'int32', shape: [1, 2], data: Int32Array.from([1, 2]) }, b: { dtype: 'float32', shape: [2], data: Float32Array.from([1, 2]) } }, specs), /inputs\.b\.tensor_shape: has a batch of 2; another input has 1/)
  t.throws(() => instancesFromTensors({ a: { dtype: 'int32', shape: [1, 3], data: Int32Array.from([1, 2, 3]) }, b: { dtype: 'float32', shape: [1], data: Float32Array.from([1]) } }, specs), /inputs\.a\.tensor_shape: has shape \[1, 3\]/)
  t.throws(() => instancesFromTensors({ c: { dtype: 'int32', shape: [1], data: Int32Array.from([1]) } }, specs), /inputs\.c: is not an input of this model/)
  t.same(stackRows([[1, 2], [3, 4]], 'int64').data, BigInt64Array.from([1n, 2n, 3n, 4n]))
})

t.test('a model check past its time limit is killed and refused', async t => {
  const err = await checkModel('onnx', fixture('mlp.onnx'), { timeoutMs: 50 }).catch(e => e)
  t.equal(err.code, 'ERR_MODEL_CHECK_LIMIT', `refused: ${err.message}`)
  t.match(err.message, /did not load and run within 50 ms/)
  const small = await checkModel('onnx', fixture('mlp.onnx'), { maxRssMb: 20 }).catch(e => e)
  t.equal(small.code, 'ERR_MODEL_CHECK_LIMIT', `a check past its memory limit is refused: ${small.message}`)
  t.match(small.message, /took more than 20 MiB of memory; refused/)
  await writeFile(join(root, 'garbage.onnx'), Buffer.from([0x08, 0x07, 0x12, 0xff, 0xff]))
  const garbage = await checkModel('onnx', join(root, 'garbage.onnx')).catch(e => e)
  t.equal(garbage.code, 'ERR_MODEL_LOAD', 'a corrupt file is a load error naming it')
  t.match(garbage.message, /^garbage\.onnx: ONNX Runtime cannot load this model/)
})
