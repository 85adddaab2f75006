// gatemesh dashboard: plain ES module, no build step, no CDN. Everything it
// shows comes from /api/v1 with the access token of the logged-in user;
// untrusted text only ever reaches the page through textContent.

import { rolloutsView } from './rollouts.js'

const $ = (sel) => document.querySelector(sel)
const SESSION_KEY = 'gatemesh.session'

let session = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? 'null')
let nodes = new Map()
let models = []
// the model repository and the deployments, for users whose roles grant those services
let repository = []
let deployments = []
let revocations = []
let refreshTimer
let events
let renderPending = false

function h (tag, props = {}, ...children) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') el.className = v
    else if (k.startsWith('data-')) el.setAttribute(k, v)
    else el[k] = v
  }
  for (const c of children.flat()) el.append(c instanceof Node ? c : document.createTextNode(String(c ?? '')))
  return el
}

// --- session -------------------------------------------------------------

function saveSession (s) {
  session = s
  if (s == null) sessionStorage.removeItem(SESSION_KEY)
  else sessionStorage.setItem(SESSION_KEY, JSON.stringify(s))
  clearTimeout(refreshTimer)
  // renew a minute before the access token expires
  if (s != null) refreshTimer = setTimeout(() => { refresh().catch(() => logout()) }, Math.max(5_000, s.expiresAt - Date.now() - 60_000))
}

async function refresh () {
  const res = await fetch('/api/v1/auth/refresh', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refreshToken: session.refreshToken }) })
  if (!res.ok) throw new Error('session ended')
  saveSession(await res.json())
}

async function api (path, options = {}, retried = false) {
  const res = await fetch(path, { ...options, headers: { ...options.headers, authorization: `Bearer ${session?.token}` } })
  if (res.status === 401 && !retried && session != null) {
    await refresh()
    return await api(path, options, true)
  }
  if (!res.ok) {
    const body = await res.json().catch(() => ({}))
    // the API names the request field at fault; forms mark it
    throw Object.assign(new Error(body.message ?? `${res.status} ${res.statusText}`), typeof body.field === 'string' ? { field: body.field } : {})
  }
  return res
}

async function login (event) {
  event.preventDefault()
  const form = new FormData(event.target)
  $('#login-error').textContent = ''
  const res = await fetch('/api/v1/auth/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: form.get('username'), password: form.get('password') }) })
  const body = await res.json().catch(() => ({}))
  if (!res.ok) {
    $('#login-error').textContent = res.status === 429 ? body.message : 'Wrong username or password.'
    return
  }
  $('#password').value = ''
  saveSession(body)
  show()
}

async function logout () {
  const refreshToken = session?.refreshToken
  saveSession(null)
  events?.abort()
  if (refreshToken != null) await fetch('/api/v1/auth/logout', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refreshToken }) }).catch(() => {})
  show()
}

// --- live fleet ----------------------------------------------------------

/** Server-Sent Events over fetch: EventSource cannot send an Authorization header. */
async function followEvents () {
  events?.abort()
  const controller = new AbortController()
  events = controller
  while (!controller.signal.aborted && session != null) {
    try {
      const res = await api('/api/v1/events', { signal: controller.signal })
      $('#live').className = 'live on'
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
      let buffer = ''
      while (true) {
        const { value, done } = await reader.read()
        if (done) break
        buffer += value
        let end
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          const type = /^event: (.*)$/m.exec(block)?.[1]
          const data = block.split('\n').filter(l => l.startsWith('data: ')).map(l => l.slice(6)).join('\n')
          if (type != null && data !== '') onEvent(type, JSON.parse(data))
        }
      }
    } catch (err) {
      if (controller.signal.aborted) return
    }
    $('#live').className = 'live off'
    await new Promise(resolve => setTimeout(resolve, 2000))
  }
}

function onEvent (type, data) {
  if (type === 'snapshot') {
    nodes = new Map(data.nodes.map(n => [n.peerId, n]))
    models = data.models
    if (data.repository != null) repository = data.repository
    if (data.deployments != null) deployments = data.deployments
    if (data.rollouts != null) rollouts.update(data.rollouts)
  } else if (type === 'delta') {
    for (const n of data.nodes) nodes.set(n.peerId, n)
    for (const peerId of data.removed) nodes.delete(peerId)
    if (data.models != null) models = data.models
    if (data.repository != null) repository = data.repository
    if (data.deployments != null) deployments = data.deployments
    if (data.rollouts != null) rollouts.update(data.rollouts)
  } else {
    return
  }
  // draw at most once a frame, however many events arrive
  if (renderPending) return
  renderPending = true
  requestAnimationFrame(() => {
    renderPending = false
    renderNodes()
    renderSensors()
    renderModels()
    renderRepository()
    renderDeployments()
    rollouts.render()
  })
}

// --- views ---------------------------------------------------------------

const short = (id) => id.length > 16 ? `…${id.slice(-10)}` : id
const mb = (bytes) => `${Math.round(bytes / 1048576)} MB`
const ago = (ms) => ms == null || ms === 0 ? '–' : `${Math.max(0, Math.round((Date.now() - ms) / 1000))} s ago`
const stateBadge = (state) => h('span', { class: `state ${state}` }, state)
// the coordinator measures every clock against its own; for itself, its own against the fleet's
const clockText = (n) => n.clock == null || n.clock.offsetSec == null
  ? '–'
  : `${n.clock.offsetSec > 0 ? '+' : ''}${n.clock.offsetSec} s${n.clock.skewed ? (n.self ? ' — this coordinator\'s clock is off: fix NTP' : ' — skewed: fix NTP') : ''}`
const labelText = (labels) => Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(', ')

function renderNodes () {
  const list = [...nodes.values()].sort((a, b) => (a.role ?? '').localeCompare(b.role ?? '') || a.peerId.localeCompare(b.peerId))
  const fleet = list.filter(n => n.role === 'gateway' || n.role === 'server')
  const count = (s) => fleet.filter(n => n.state === s).length
  $('#nodes-summary').replaceChildren(
    h('div', {}, h('b', {}, fleet.length), 'gateways & servers'),
    h('div', {}, h('b', {}, count('alive')), 'alive'),
    h('div', {}, h('b', {}, count('suspect')), 'suspect'),
    h('div', {}, h('b', {}, count('dead')), 'dead')
  )
  $('#nodes-table tbody').replaceChildren(...list.map(n => h('tr', { 'data-peer': n.peerId, 'data-role': n.role ?? '', 'data-state': n.state },
    h('td', { class: 'mono', title: n.peerId }, short(n.peerId), n.self ? ' (this coordinator)' : ''),
    h('td', {}, n.role ?? '?'),
    h('td', {}, stateBadge(n.state)),
    h('td', {}, labelText(n.labels)),
    h('td', {}, n.health == null ? '–' : `${n.health.cpuPct.toFixed(0)} %`),
    h('td', {}, n.health == null ? '–' : `${mb(n.health.memTotalBytes - n.health.memFreeBytes)} / ${mb(n.health.memTotalBytes)}`),
    h('td', {}, n.health == null ? '–' : n.health.load.map(l => l.toFixed(1)).join(' ')),
    h('td', {}, n.sensors.length),
    h('td', {}, `${n.instances.running} running${n.instances.failed > 0 ? `, ${n.instances.failed} failed` : ''}`),
    h('td', { class: n.clock?.skewed ? 'clock skewed' : 'clock', 'data-clock-skewed': String(n.clock?.skewed === true) }, clockText(n)),
    h('td', {}, ago(n.health?.ts)),
    h('td', {}, isAdmin() && !n.self ? h('button', { type: 'button', class: 'danger', 'data-revoke': n.peerId }, 'Revoke') : '')
  )))
  const select = $('#logs-node')
  const chosen = select.value
  select.replaceChildren(h('option', { value: '' }, 'every live node'), ...list.map(n => h('option', { value: n.peerId }, `${n.role ?? '?'} ${short(n.peerId)}`)))
  select.value = chosen
}

const isAdmin = () => session?.roles.includes('admin') === true
const rollouts = rolloutsView({ $, h, api, isAdmin, short, stateBadge })

// --- revocation ----------------------------------------------------------

async function loadRevocations () {
  const res = await api('/api/v1/revocations')
  revocations = (await res.json()).revocations
  renderRevocations()
}

function renderRevocations () {
  $('#revoked').hidden = revocations.length === 0
  $('#revoked-table tbody').replaceChildren(...revocations.map(r => h('tr', { 'data-revoked': r.peerId },
    h('td', { class: 'mono', title: r.peerId }, short(r.peerId)),
    h('td', {}, new Date(r.revokedAt).toLocaleString()),
    h('td', {}, r.by),
    h('td', {}, r.reason)
  )))
}

async function revokeNode (peerId) {
  const reason = prompt(`Revoke node ${peerId}?\nEvery agent cuts it off at once and drops what it wrote; there is no undo (re-enroll the device).\nReason:`)
  if (reason == null) return
  try {
    await api(`/api/v1/nodes/${encodeURIComponent(peerId)}/revoke`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ reason }) })
    $('#revoke-status').textContent = `Node ${short(peerId)} revoked; every agent cuts it off.`
    nodes.delete(peerId)
    renderNodes()
    await loadRevocations()
  } catch (err) {
    $('#revoke-status').textContent = `Revoke failed: ${err.message}`
  }
}

function renderSensors () {
  const rows = [...nodes.values()].flatMap(n => n.sensors.map(s => h('tr', { 'data-sensor': s.id },
    h('td', { class: 'mono', title: n.peerId }, short(n.peerId)),
    h('td', {}, stateBadge(n.state)),
    h('td', {}, s.id),
    h('td', {}, s.type),
    h('td', {}, s.unit ?? ''),
    h('td', {}, s.geo == null ? '' : JSON.stringify(s.geo))
  )))
  $('#sensors-table tbody').replaceChildren(...rows)
  $('#sensors-empty').hidden = rows.length > 0
}

function renderModels () {
  $('#models-table tbody').replaceChildren(...models.map(m => h('tr', { 'data-model': m.model },
    h('td', {}, m.model),
    h('td', {}, m.versions.join(', ')),
    h('td', {}, Object.entries(m.states).map(([s, n]) => `${n} ${s}`).join(', ')),
    h('td', { class: 'mono' }, m.instances.map(i => `${short(i.node)} (${i.state}${i.nodeState === 'alive' ? '' : `, node ${i.nodeState}`})`).join(', '))
  )))
  $('#models-empty').hidden = models.length > 0
}

// --- model repository ----------------------------------------------------

/** Instances of a served name by state, from the live model status. */
function runningText (name) {
  const m = models.find(x => x.model === name)
  return m == null ? 'not running' : Object.entries(m.states).map(([s, n]) => `${n} ${s}`).join(', ')
}

function renderRepository () {
  $('#models-list tbody').replaceChildren(...repository.map(({ name, versions, latest }) => h('tr', { 'data-model': name, 'data-running': String(models.find(x => x.model === name)?.states.running ?? 0) },
    h('td', {}, h('b', {}, name), latest.metadata.description == null ? '' : h('div', { class: 'muted' }, latest.metadata.description)),
    h('td', {}, latest.version),
    h('td', {}, latest.format),
    h('td', {}, versions.join(', ')),
    h('td', {}, latest.owner),
    h('td', {}, latest.metadata.modelType ?? ''),
    h('td', {}, latest.metadata.deploymentType ?? ''),
    h('td', {}, `${latest.metadata.inputFormat ?? latest.inputs.map(i => `${i.name} [${i.shape.join('×')}]`).join(', ')} → ${latest.metadata.outputFormat ?? latest.outputs.map(o => o.labels?.join('/') ?? o.name).join(', ')}`),
    h('td', { class: 'mono', title: latest.digest }, h('button', { type: 'button', class: 'link', 'data-download': `${name}/${latest.version}` }, `${latest.digest.slice(0, 12)}… zip`)),
    h('td', {}, runningText(name))
  )))
  $('#models-list-empty').hidden = repository.length > 0
  const select = $('#deployment-model')
  const chosen = select.value
  select.replaceChildren(...repository.flatMap(({ name, versions }) => versions.map(v => h('option', { value: `${name}@${v}` }, `${name} ${v}`))))
  if (chosen !== '') select.value = chosen
}

async function uploadModel (event) {
  event.preventDefault()
  const form = new FormData(event.target)
  // optional fields left empty are not sent: the API takes no empty values
  for (const [k, v] of [...form.entries()]) {
    if ((typeof v === 'string' && v.trim() === '') || (v instanceof File && v.name === '')) form.delete(k)
  }
  const status = $('#model-status')
  status.textContent = 'Uploading, checking the model (loaded and run once with its runtime), signing…'
  try {
    const res = await api('/api/v1/models', { method: 'POST', body: form })
    const model = await res.json()
    status.textContent = `Stored ${model.name} ${model.version} (${model.format}: ${model.inputs.map(i => `${i.name} ${i.dtype}[${i.shape.join('×')}]`).join(', ')} → ${model.outputs.map(o => o.name).join(', ')}): bundle ${model.digest.slice(0, 12)}… signed and published to the mesh.`
    event.target.reset()
  } catch (err) {
    status.textContent = `Upload failed: ${err.message}`
  }
}

async function downloadBundle (target) {
  const res = await api(`/api/v1/models/${target.split('/').map(encodeURIComponent).join('/versions/')}/bundle`)
  const url = URL.createObjectURL(await res.blob())
  h('a', { href: url, download: `${target.replace('/', '-')}.zip` }).click()
  setTimeout(() => URL.revokeObjectURL(url), 10_000)
}

// --- deployments -----------------------------------------------------------

const list = (text) => String(text ?? '').split(',').map(s => s.trim()).filter(s => s !== '')

function deploymentSpec (form) {
  const [name, version] = String(form.get('model') ?? '').split('@')
  const placement = { policy: form.get('policy') }
  if (form.get('role') !== '') placement.role = form.get('role')
  const labels = list(form.get('labels'))
  if (labels.length > 0) placement.labels = Object.fromEntries(labels.map(l => [l.split('=')[0].trim(), (l.split('=')[1] ?? '').trim()]))
  const sensorTypes = list(form.get('sensorTypes'))
  if (sensorTypes.length > 0) placement.sensorTypes = sensorTypes
  const nodes = list(form.get('nodes'))
  if (nodes.length > 0) placement.nodes = nodes
  const spec = { id: form.get('id'), model: { name, version }, replicas: Number(form.get('replicas')), placement, instance: {} }
  const start = form.get('start')
  const end = form.get('end')
  if (start !== '' || end !== '') {
    if (start === '' || end === '') throw new Error('a window needs both a start and an end')
    spec.window = { start: new Date(start).toISOString(), end: new Date(end).toISOString() }
  }
  if (String(form.get('instanceName') ?? '').trim() !== '') spec.instance.name = String(form.get('instanceName')).trim()
  const sensors = list(form.get('sensors'))
  if (sensors.length > 0) spec.instance.input = { sensors }
  return spec
}

async function createDeployment (event) {
  event.preventDefault()
  const status = $('#deployment-status')
  try {
    const spec = deploymentSpec(new FormData(event.target))
    status.textContent = 'Signing and writing to the mesh…'
    const res = await api('/api/v1/deployments', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(spec) })
    const d = await res.json()
    status.textContent = `Deployment ${d.id} is in the mesh; its scheduler places it now.`
  } catch (err) {
    status.textContent = `Deployment failed: ${err.message}`
  }
}

async function deleteDeployment (id) {
  try {
    await api(`/api/v1/deployments/${encodeURIComponent(id)}`, { method: 'DELETE' })
    $('#deployment-status').textContent = `Deployment ${id} deleted; its instances stop everywhere.`
  } catch (err) {
    $('#deployment-status').textContent = `Delete failed: ${err.message}`
  }
}

const when = (iso) => new Date(iso).toLocaleString()

// a model update in a line: where it is, or how the last one ended and why
function updateText (u) {
  const v = (x) => x.version ?? x.bundle.slice(0, 12)
  if (u.phase === 'canary') return `updating ${v(u.from)} → ${v(u.to)}: canary ${u.canary.state}, ${u.step}/${u.of}`
  if (u.phase === 'rolling') return `updating ${v(u.from)} → ${v(u.to)}: ${u.step}/${u.of}`
  return `${v(u.to)} ${u.phase}${u.reason == null ? '' : `: ${u.reason}`}`
}

function renderDeployments () {
  $('#deployments-table tbody').replaceChildren(...deployments.map(d => h('tr', { 'data-deployment': d.id, 'data-running': String(d.running) },
    h('td', {}, h('b', {}, d.id)),
    h('td', {}, `${d.spec.model.name} ${d.spec.model.version ?? d.spec.model.digest.slice(0, 12)}`, d.model === d.spec.model.name ? '' : h('div', { class: 'muted' }, `as ${d.model}`), d.update == null ? '' : h('div', { class: 'muted', 'data-update': d.update.phase, title: d.update.reason ?? '' }, updateText(d.update))),
    h('td', {}, `${d.running} / ${d.replicas}`),
    h('td', {}, d.spec.window == null ? (d.spec.schedule == null ? 'always' : `${d.spec.schedule.cron} for ${d.spec.schedule.durationSec} s`) : `${when(d.spec.window.start)} – ${when(d.spec.window.end)}`, ' ', stateBadge(d.window.active ? 'active' : 'inactive')),
    h('td', { class: 'mono' }, d.placement == null ? 'not placed yet' : d.placement.nodes.map(short).join(', ')),
    h('td', {}, d.instances.length === 0 ? '–' : d.instances.map(i => h('div', { 'data-node': i.node }, h('span', { class: 'mono', title: i.node }, short(i.node)), ' ', stateBadge(i.state), i.reason == null ? '' : h('span', { class: 'muted' }, ` ${i.reason}`)))),
    h('td', { class: 'mono' }, `POST /api/v1/models/${d.model}:predict`),
    h('td', {}, d.createdBy ?? ''),
    h('td', {}, h('button', { type: 'button', class: 'danger', 'data-delete': d.id }, 'Delete'))
  )))
  $('#deployments-empty').hidden = deployments.length > 0
}

function logsQuery (form) {
  const q = new URLSearchParams()
  for (const name of ['text', 'level', 'service', 'node', 'since', 'limit']) {
    const v = String(form.get(name) ?? '').trim()
    if (v !== '') q.set(name, v)
  }
  return q
}

async function searchLogs (event) {
  event.preventDefault()
  const status = $('#logs-status')
  status.textContent = 'Searching…'
  try {
    const res = await api(`/api/v1/logs?${logsQuery(new FormData($('#logs-form')))}`)
    const body = await res.json()
    const failed = body.nodes.filter(n => n.error != null)
    status.textContent = `${body.count} lines from ${body.nodes.length - failed.length} nodes` +
      (body.truncated ? ' (limit reached)' : '') +
      (failed.length > 0 ? `; not searched: ${failed.map(n => `${short(n.peerId)} (${n.error})`).join(', ')}` : '')
    $('#logs-table tbody').replaceChildren(...body.entries.map(e => h('tr', { 'data-node': e.node },
      h('td', { class: 'mono' }, new Date(e.time).toLocaleString()),
      h('td', { class: 'mono', title: e.node }, short(e.node)),
      h('td', {}, e.service ?? ''),
      h('td', { class: `lvl-${e.level}` }, e.level),
      h('td', {}, e.msg ?? '')
    )))
  } catch (err) {
    status.textContent = `Search failed: ${err.message}`
  }
}

async function downloadLogs () {
  const q = logsQuery(new FormData($('#logs-form')))
  q.set('limit', '100000')
  const res = await api(`/api/v1/logs/download?${q}`)
  const url = URL.createObjectURL(await res.blob())
  h('a', { href: url, download: `gatemesh-logs-${new Date().toISOString()}.ndjson` }).click()
  setTimeout(() => URL.revokeObjectURL(url), 10_000)
}

function selectTab (name) {
  for (const b of document.querySelectorAll('#tabs button')) b.classList.toggle('active', b.dataset.tab === name)
  for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== `${name}-view`
  if (name === 'rollouts') rollouts.shown()
}

function show () {
  const inside = session != null
  $('#login-view').hidden = inside
  $('#tabs').hidden = !inside
  $('#whoami').hidden = !inside
  if (!inside) {
    for (const v of document.querySelectorAll('.view')) v.hidden = true
    return
  }
  $('#user-name').textContent = session.user.username
  $('#user-roles').textContent = `(${session.roles.join(', ')})`
  for (const b of document.querySelectorAll('#tabs button[data-service]')) b.hidden = !session.services.includes(b.dataset.service)
  selectTab('nodes')
  void followEvents()
  loadRevocations().catch(() => {})
}

$('#login-form').addEventListener('submit', login)
$('#logout').addEventListener('click', () => { void logout() })
$('#logs-form').addEventListener('submit', searchLogs)
$('#model-form').addEventListener('submit', uploadModel)
$('#deployment-form').addEventListener('submit', createDeployment)
$('#models-list').addEventListener('click', (e) => { const t = e.target.closest('[data-download]'); if (t != null) downloadBundle(t.dataset.download).catch(err => { $('#model-status').textContent = `Download failed: ${err.message}` }) })
$('#deployments-table').addEventListener('click', (e) => { const t = e.target.closest('[data-delete]'); if (t != null && confirm(`Delete deployment ${t.dataset.delete}?`)) void deleteDeployment(t.dataset.delete) })
$('#nodes-table').addEventListener('click', (e) => { const t = e.target.closest('[data-revoke]'); if (t != null) void revokeNode(t.dataset.revoke) })
$('#logs-download').addEventListener('click', () => { downloadLogs().catch(err => { $('#logs-status').textContent = `Download failed: ${err.message}` }) })
for (const b of document.querySelectorAll('#tabs button')) b.addEventListener('click', () => selectTab(b.dataset.tab))
setInterval(() => { if (session != null) renderNodes() }, 5000)
saveSession(session)
show()
