// The dashboard's rollouts view: every agent rollout as the coordinator's
// agent works it out (waves, each target's outcome and why), live through
// the event stream; admins create rollouts from the release bundles the
// mesh holds and pause, resume, abort them or raise their failure budget.
// Helpers come from app.js (no import cycle); untrusted text only reaches
// the page through textContent.

/**
 * @param {object} ui what app.js shares: `$`, `h`, `api`, `isAdmin`, `short`, `stateBadge`
 * @returns {{ update(list): void, render(): void, shown(): void }}
 */
export function rolloutsView ({ $, h, api, isAdmin, short, stateBadge }) {
  let rollouts = []
  // a card is rebuilt only when its rollout changed, so a value being typed into it survives the stream
  const cards = new Map()
  const drafts = new Map()
  let releasesAt = 0

  const mb = (bytes) => bytes >= 1048576 ? `${(bytes / 1048576).toFixed(1)} MB` : `${Math.ceil(bytes / 1024)} KB`
  const labelText = (labels) => Object.entries(labels ?? {}).map(([k, v]) => `${k}=${v}`).join(', ')

  async function loadReleases () {
    releasesAt = Date.now()
    const { releases } = await (await api('/api/v1/releases')).json()
    const select = $('#rollout-releases')
    const chosen = new Set([...select.selectedOptions].map(o => o.value))
    select.replaceChildren(...releases.map(r => h('option', { value: r.digest, selected: chosen.has(r.digest), 'data-version': r.version },
      `${r.version} · ${r.arch ?? 'CPU read once pulled'} · ${mb(r.size)} · on ${r.holders} node${r.holders === 1 ? '' : 's'} · ${r.digest.slice(0, 12)}…`)))
    if (releases.length === 0) select.replaceChildren(h('option', { disabled: true, value: '' }, 'no release bundle in the mesh: gatemesh release publish FILE on any agent'))
  }

  // --- field errors --------------------------------------------------------

  function clearErrors () {
    for (const e of document.querySelectorAll('#rollout-form [data-error-for]')) e.textContent = ''
    for (const e of document.querySelectorAll('#rollout-form [aria-invalid]')) e.removeAttribute('aria-invalid')
  }

  /** `body.waves[1]` → the form's `waves` field, marked with the API's message. */
  function showFieldError (field, message) {
    const name = /^body\.([A-Za-z]+)/.exec(field ?? '')?.[1]
    const slot = name == null ? null : document.querySelector(`#rollout-form [data-error-for="${name}"]`)
    if (slot == null) return false
    slot.textContent = message
    document.querySelector(`#rollout-form [name="${name}"]`)?.setAttribute('aria-invalid', 'true')
    return true
  }

  class FieldError extends Error {
    constructor (field, message) {
      super(message)
      this.field = field
    }
  }

  function createBody (form) {
    const body = { releases: form.getAll('releases').map(String) }
    const text = (name) => String(form.get(name) ?? '').trim()
    if (text('id') !== '') body.id = text('id')
    if (text('description') !== '') body.description = text('description')
    if (text('waves') !== '') {
      body.waves = text('waves').split(',').map(s => s.trim().replace(/%$/, '')).filter(s => s !== '').map((s, i) => {
        if (!/^\d+(\.\d+)?$/.test(s)) throw new FieldError(`body.waves[${i}]`, `body.waves[${i}]: "${s}" is not a percentage`)
        return Number(s)
      })
    }
    const labels = text('labels').split(',').map(s => s.trim()).filter(s => s !== '')
    if (labels.length > 0) {
      body.labels = Object.fromEntries(labels.map(l => {
        const at = l.indexOf('=')
        if (at <= 0) throw new FieldError('body.labels', `body.labels: "${l}" is not key=value`)
        return [l.slice(0, at).trim(), l.slice(at + 1).trim()]
      }))
    }
    for (const name of ['maxFailures', 'waveWaitSec', 'healthDeadlineSec']) {
      if (text(name) !== '') body[name] = Number(text(name))
    }
    if (form.get('allowDowngrade') != null) body.allowDowngrade = true
    return body
  }

  async function create (event) {
    event.preventDefault()
    clearErrors()
    const status = $('#rollout-status')
    try {
      const body = createBody(new FormData(event.target))
      status.textContent = 'Pulling and verifying the releases, signing the rollout…'
      const res = await api('/api/v1/rollouts', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
      const r = await res.json()
      status.textContent = `Rollout ${r.id} (${r.version}) is signed and in the mesh: ${r.targets.length} target${r.targets.length === 1 ? '' : 's'} in ${r.waves.length} wave${r.waves.length === 1 ? '' : 's'}` +
        (r.excluded.length > 0 ? `, ${r.excluded.length} node${r.excluded.length === 1 ? '' : 's'} excluded (see why below)` : '') + '.'
      merge(r)
    } catch (err) {
      showFieldError(err.field, err.message)
      status.textContent = `Rollout refused: ${err.message}`
    }
  }

  // --- actions ---------------------------------------------------------------

  async function change (id, patch, done) {
    const status = $('#rollout-action-status')
    try {
      const res = await api(`/api/v1/rollouts/${encodeURIComponent(id)}`, { method: 'PATCH', headers: { 'content-type': 'application/json' }, body: JSON.stringify(patch) })
      const r = await res.json()
      drafts.delete(id)
      status.textContent = `Rollout ${id} ${done}; the record is signed again and every agent follows it.`
      merge(r)
    } catch (err) {
      status.textContent = `Rollout ${id}: ${err.message}`
    }
  }

  function onClick (e) {
    const t = e.target.closest('button[data-action]')
    if (t == null) return
    const id = t.dataset.rollout
    const action = t.dataset.action
    if (action === 'pause') void change(id, { state: 'paused' }, 'paused')
    else if (action === 'resume') void change(id, { state: 'active' }, 'resumed')
    else if (action === 'abort') {
      if (confirm(`Abort rollout ${id}? Nodes that took the release keep it; no other node will. An aborted rollout cannot be resumed.`)) void change(id, { state: 'aborted' }, 'aborted')
    } else if (action === 'budget') {
      const input = t.parentElement.querySelector('input[data-max-failures]')
      const n = Number(input.value)
      if (input.value.trim() === '' || !Number.isInteger(n) || n < 0) {
        $('#rollout-action-status').textContent = `Rollout ${id}: maxFailures must be a whole number ≥ 0`
        return
      }
      void change(id, { maxFailures: n }, `allows ${n} failure${n === 1 ? '' : 's'} now`)
    }
  }

  // --- rendering -------------------------------------------------------------

  function merge (r) {
    const i = rollouts.findIndex(x => x.id === r.id)
    if (i >= 0) rollouts[i] = r
    else rollouts.unshift(r)
    render()
  }

  // widths through the CSSOM: the dashboard's CSP allows no inline style attributes
  function bar (ok, bad) {
    const done = h('span', { class: 'ok' })
    const failed = h('span', { class: 'bad' })
    done.style.width = `${ok}%`
    failed.style.width = `${bad}%`
    return h('div', { class: 'bar' }, done, failed)
  }

  function waveBox (r, w) {
    const pct = (n) => w.size === 0 ? 0 : Math.round((n / w.size) * 100)
    return h('div', { class: `wave${w.index === r.currentWave && r.phase === 'active' ? ' current' : ''}`, 'data-wave': String(w.index) },
      h('b', {}, `Wave ${w.index + 1}`), ` · ${w.percent}%`,
      h('div', { class: 'muted' }, `${w.done}/${w.size} done${w.failed > 0 ? `, ${w.failed} failed` : ''} · ${w.started ? 'started' : 'not started'}`),
      bar(pct(w.done), pct(w.failed)))
  }

  function actions (r) {
    if (!isAdmin() || r.phase === 'aborted') return ''
    const id = r.id
    const draft = drafts.get(id)
    const input = h('input', { type: 'number', min: '0', max: '100000', value: draft ?? String(r.spec.maxFailures), 'data-max-failures': id, title: 'failures allowed before the rollout halts' })
    input.addEventListener('input', () => { drafts.set(id, input.value) })
    return h('div', { class: 'actions' },
      r.spec.state === 'paused'
        ? h('button', { type: 'button', class: 'secondary', 'data-action': 'resume', 'data-rollout': id }, 'Resume')
        : h('button', { type: 'button', class: 'secondary', 'data-action': 'pause', 'data-rollout': id }, 'Pause'),
      h('label', { class: 'check' }, 'Max failures', input),
      h('button', { type: 'button', class: r.phase === 'halted' ? 'secondary' : 'link', 'data-action': 'budget', 'data-rollout': id }, r.phase === 'halted' ? 'Raise and go on' : 'Set'),
      h('button', { type: 'button', class: 'danger', 'data-action': 'abort', 'data-rollout': id }, 'Abort'))
  }

  function card (r) {
    const spec = r.spec
    const when = spec.createdAt == null ? '' : new Date(spec.createdAt).toLocaleString()
    const rows = [
      ...r.targets.map(t => h('tr', { 'data-peer': t.peer, 'data-outcome': t.outcome },
        h('td', { class: 'mono', title: t.peer }, short(t.peer)),
        h('td', {}, String(t.wave + 1)),
        h('td', {}, t.arch),
        h('td', {}, stateBadge(t.outcome)),
        h('td', {}, t.version),
        h('td', {}, t.state ?? ''),
        h('td', {}, t.detail ?? ''),
        // a time, not "s ago": a card is drawn again only when its rollout changes
        h('td', {}, t.at == null ? '' : new Date(t.at).toLocaleTimeString()))),
      ...r.excluded.map(x => h('tr', { 'data-peer': x.peer, 'data-outcome': 'excluded' },
        h('td', { class: 'mono', title: x.peer }, short(x.peer)),
        h('td', {}, '–'), h('td', {}, ''),
        h('td', {}, stateBadge('excluded')),
        h('td', {}, ''), h('td', {}, ''),
        h('td', {}, x.reason),
        h('td', {}, '')))
    ]
    return h('div', { class: 'rollout', 'data-rollout': r.id, 'data-phase': r.phase },
      h('header', {},
        h('h3', {}, r.id),
        h('span', {}, `release ${r.version} (${spec.releases.map(x => x.arch).join(', ')})`),
        stateBadge(r.phase),
        h('span', { class: 'muted', 'data-current-wave': String(r.currentWave) }, `wave ${Math.min(r.currentWave + 1, r.waves.length)} of ${r.waves.length}`),
        h('span', { class: r.failures > spec.maxFailures ? 'error' : 'muted', 'data-failures': String(r.failures) }, `${r.failures} failed, ${spec.maxFailures} allowed`),
        actions(r)),
      h('div', { class: 'muted' },
        [spec.labels == null ? 'every node' : `nodes with ${labelText(spec.labels)}`,
          `health deadline ${spec.healthDeadlineSec} s`, `wait ${spec.waveWaitSec} s between waves`,
          spec.allowDowngrade ? 'downgrades allowed' : '',
          spec.createdBy == null ? '' : `by ${spec.createdBy}`, when, spec.description ?? ''].filter(s => s !== '').join(' · ')),
      h('div', { class: 'waves' }, r.waves.map(w => waveBox(r, w))),
      rows.length === 0
        ? h('p', { class: 'muted' }, 'No node matches this rollout.')
        : h('table', { class: 'targets' },
          h('thead', {}, h('tr', {}, ...['Node', 'Wave', 'CPU', 'Outcome', 'Runs', 'State', 'Detail / reason', 'Reported'].map(c => h('th', {}, c)))),
          h('tbody', {}, rows)),
      r.unmatchedArch > 0 ? h('p', { class: 'muted' }, `${r.unmatchedArch} matching node(s) have a CPU this rollout has no release for.`) : '')
  }

  function render () {
    const admin = isAdmin()
    $('#rollout-form').hidden = !admin
    $('#rollouts-readonly').hidden = admin
    const seen = new Set()
    const els = rollouts.map(r => {
      seen.add(r.id)
      // the role is part of the key: a card drawn for another session's role is drawn again
      const key = `${admin}\n${JSON.stringify(r)}`
      let c = cards.get(r.id)
      if (c == null || c.key !== key) {
        c = { key, el: card(r) }
        cards.set(r.id, c)
      }
      return c.el
    })
    for (const id of cards.keys()) if (!seen.has(id)) cards.delete(id)
    $('#rollouts-list').replaceChildren(...els)
    $('#rollouts-empty').hidden = rollouts.length > 0
  }

  $('#rollout-form').addEventListener('submit', (e) => { void create(e) })
  $('#rollouts-list').addEventListener('click', onClick)

  return {
    /** the whole list, from the event stream */
    update (list) {
      rollouts = Array.isArray(list) ? list : []
      // new bundles show up with the same changes; fetch the list again now and then while the view is open
      if (!$('#rollouts-view').hidden && isAdmin() && Date.now() - releasesAt > 5000) loadReleases().catch(() => {})
    },
    render,
    shown () {
      render()
      if (isAdmin()) loadReleases().catch(err => { $('#rollout-status').textContent = `Could not list releases: ${err.message}` })
    }
  }
}
