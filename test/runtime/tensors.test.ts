import t from 'tap'
import { parsePredictBody, rowOf, toBatch } from '../../node/runtime/tensors.ts'
import type { TensorSpec } from '../../packaging/manifest.ts'

const one: TensorSpec[] = [{ name: 'x', dtype: 'float32', shape: [-1, 2, 3] }]
const two: TensorSpec[] = [{ name: 'a', dtype: 'float32', shape: [-1, 2] }, { name: 'b', dtype: 'int32', shape: [-1] }]

t.test('row and columnar forms', async t => {
  const m = [[1, 2, 3], [4, 5, 6]]
  const rows = parsePredictBody({ instances: [m, m] }, one)
  t.equal(rows.instances.length, 2)
  t.same(Array.from(rows.instances[0]!.values[0] as Float32Array), [1, 2, 3, 4, 5, 6])
  t.same(parsePredictBody({ instances: [{ x: m }] }, one).instances.length, 1, 'named single input')
  const cols = parsePredictBody({ inputs: [m, m, m] }, one)
  t.equal(cols.instances.length, 3)
  t.equal(cols.columnar, true)
  const multi = parsePredictBody({ instances: [{ a: [1, 2], b: 7 }] }, two)
  t.same(Array.from(multi.instances[0]!.values[1] as Int32Array), [7])
  t.type(multi.instances[0]!.values[1], Int32Array)
  const multiCols = parsePredictBody({ inputs: { a: [[1, 2], [3, 4]], b: [1, 2] } }, two)
  t.equal(multiCols.instances.length, 2)
  const batch = toBatch(multiCols.instances, two)
  t.same(batch[0]!.shape, [2, 2])
  t.same(Array.from(batch[0]!.data as Float32Array), [1, 2, 3, 4])
  t.same(rowOf({ dtype: 'float32', shape: [2, 2, 2], data: Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]) }, 1), [[5, 6], [7, 8]])
})

t.test('bad bodies name the problem', async t => {
  const m = [[1, 2, 3], [4, 5, 6]]
  const cases: Array<[unknown, TensorSpec[], string, RegExp]> = [
    [[1], one, 'body', /JSON object/],
    [{}, one, 'body', /exactly one/],
    [{ instances: [], inputs: [] }, one, 'body', /exactly one/],
    [{ instances: [] }, one, 'instances', /non-empty/],
    [{ instances: [m], extra: 1 }, one, 'body.extra', /not an allowed/],
    [{ instances: [m, [[1, 2, 3]]] }, one, 'instances[1]', /expected 2 values, got 1/],
    [{ instances: [[[1, 2, 3], [4, 'x', 6]]] }, one, 'instances[0][1][1]', /finite number/],
    [{ instances: [[[1, 2, 3], [4, null, 6]]] }, one, 'instances[0][1][1]', /finite number/],
    [{ instances: [[1, 2]] }, one, 'instances[0][0]', /expected an array of 3/],
    [{ instances: [{ a: [1, 2] }] }, two, 'instances[0].b', /required/],
    [{ instances: [{ a: [1, 2], b: 1.5 }] }, two, 'instances[0].b', /integers/],
    [{ instances: [{ a: [1, 2], b: 1, c: 2 }] }, two, 'instances[0].c', /not an input/],
    [{ inputs: { a: [[1, 2]], b: [1, 2] } }, two, 'inputs.b', /2 rows, another input has 1/]
  ]
  for (const [body, specs, field, message] of cases) {
    t.throws(() => parsePredictBody(body, specs), { code: 'ERR_INVALID_INPUT', field, message }, `${JSON.stringify(body).slice(0, 60)} → ${field}`)
  }
})
