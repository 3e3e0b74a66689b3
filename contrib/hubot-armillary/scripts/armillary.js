'use strict'
// Description:
//   Armillary from the chat room: a system's status, listings, deploys and jobs, over the REST API.
//
// Configuration:
//   ARMILLARY_URL   - the server, e.g. https://armillary.example.com (no /api/v1)
//   ARMILLARY_TOKEN - an API token (`armillary token create`); the bot acts with its roles
//   ARMILLARY_POLL_MS - how often a started job is checked for its end (default 2000)
//
// Commands:
//   hubot armillary status <host> - the system's state, environment, addresses and last job
//   hubot armillary list [selector] - systems matching key=value labels, env=<env>, type=<type> or hostnames
//   hubot armillary deploy <selector> [release=<release>] - deploy, then post the result with its per-host ✔/✗
//   hubot armillary job <id> - the job's status, steps and per-host ✔/✗
//
// Notes:
//   The `armillary` prefix is optional (`hubot status web1` works too). Every call is made with the token,
//   so Armillary's roles, environments, locks and audit trail apply to what the bot does.

const MARK = { succeeded: '✔', failed: '✗', cancelled: '✗' }
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled'])
const MAX_LISTED = 20
const FOLLOW_FOR_MS = 6 * 3600 * 1000

class ArmillaryError extends Error {}

function config () {
  const url = (process.env.ARMILLARY_URL || '').replace(/\/+$/, '')
  const token = process.env.ARMILLARY_TOKEN || ''
  if (!url || !token) throw new ArmillaryError('ARMILLARY_URL and ARMILLARY_TOKEN must be set')
  return { url, token, pollMs: parseInt(process.env.ARMILLARY_POLL_MS || '2000', 10) }
}

async function api (method, path, body) {
  const { url, token } = config()
  const response = await fetch(`${url}/api/v1${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, Accept: 'application/json', 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await response.text()
  let data = null
  try { data = text ? JSON.parse(text) : null } catch (_) { data = { detail: text } }
  if (!response.ok) {
    const detail = (data && (data.detail || data.title)) || response.statusText
    throw new ArmillaryError(`${response.status}: ${detail}`)
  }
  return data
}

// "web1 web2", "service=web env=prod", "type=db" → {systems, labels, environment, type}
function parseSelector (words) {
  const selector = { labels: {} }
  const params = {}
  for (const word of words) {
    const eq = word.indexOf('=')
    if (eq < 0) {
      (selector.systems = selector.systems || []).push(word)
      continue
    }
    const key = word.slice(0, eq)
    const value = word.slice(eq + 1)
    if (key === 'release') params.release = value
    else if (key === 'env' || key === 'environment') selector.environment = value
    else if (key === 'type') selector.type = value
    else if (key === 'state') selector.state = value
    else selector.labels[key] = value
  }
  if (!Object.keys(selector.labels).length) delete selector.labels
  return { selector, params }
}

function query (selector) {
  const parts = []
  for (const [key, value] of Object.entries(selector.labels || {})) parts.push(['label', `${key}=${value}`])
  for (const key of ['environment', 'type', 'state']) if (selector[key]) parts.push([key, selector[key]])
  parts.push(['limit', String(MAX_LISTED + 1)])
  return parts.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&')
}

function hostSummary (job) {
  const hosts = (job.summary && job.summary.hosts) || {}
  const entries = Object.entries(hosts)
  if (!entries.length) return ''
  return ' [' + entries.slice(0, 20).map(([host, status]) => `${host} ${MARK[status] || '?'}`).join(', ') +
    (entries.length > 20 ? ` +${entries.length - 20} more` : '') + ']'
}

function jobLine (job) {
  const mark = MARK[job.status] || '…'
  const error = job.error && job.status !== 'succeeded' ? ` — ${job.error.split('\n')[0]}` : ''
  return `${mark} job ${job.id} ${job.action} ${job.status}${hostSummary(job)}${error} ${config().url}/jobs/${job.id}`
}

async function status (host) {
  const system = await api('GET', `/systems/${encodeURIComponent(host)}`)
  const env = (system.environment && system.environment.name) || system.environment
  const hv = system.hypervisor ? ` on ${system.hypervisor.name || system.hypervisor}` : ''
  const addresses = (system.addresses || []).length ? ` ${system.addresses.join(', ')}` : ''
  const labels = Object.entries(system.labels || {}).map(([k, v]) => `${k}=${v}`).join(' ')
  return `${system.hostname}: ${system.state} (${env}${hv})${addresses}${labels ? ' ' + labels : ''}`
}

async function list (words) {
  const { selector } = parseSelector(words)
  if (selector.systems) {
    const lines = await Promise.all(selector.systems.map((h) => status(h).catch((e) => `${h}: ${e.message}`)))
    return lines.join('\n')
  }
  const page = await api('GET', `/systems?${query(selector)}`)
  const items = page.items || []
  if (!items.length) return 'no systems match'
  const shown = items.slice(0, MAX_LISTED).map((s) => `${s.hostname} ${s.state}`)
  return shown.join('\n') + (items.length > MAX_LISTED ? `\n… and more (narrow the selector)` : '')
}

async function deploy (words) {
  const { selector, params } = parseSelector(words)
  if (!selector.systems && !selector.labels && !selector.environment && !selector.type) {
    throw new ArmillaryError('deploy what? give hostnames or key=value labels')
  }
  if (selector.systems && selector.systems.length === 1 && Object.keys(selector).length === 1) {
    return api('POST', `/systems/${encodeURIComponent(selector.systems[0])}/actions`, { action: 'deploy', params })
  }
  return api('POST', '/jobs', { action: 'deploy', selector, params })
}

async function job (id) {
  const found = await api('GET', `/jobs/${encodeURIComponent(id)}`)
  const steps = (found.steps || []).map((s) => `${MARK[s.status] || '·'} ${s.name} ${s.status}`).join(', ')
  return jobLine(found) + (steps ? `\nsteps: ${steps}` : '')
}

// Post the job's final result when it ends (the chat hears the outcome, not only "started").
function follow (res, started) {
  const { pollMs } = config()
  const deadline = Date.now() + FOLLOW_FOR_MS
  const tick = async () => {
    try {
      const current = await api('GET', `/jobs/${started.id}`)
      if (TERMINAL.has(current.status)) return res.send(jobLine(current))
    } catch (error) {
      res.robot.logger.warning(`armillary: following job ${started.id}: ${error.message}`)
    }
    if (Date.now() < deadline) setTimeout(tick, pollMs)
  }
  setTimeout(tick, pollMs)
}

function guard (res, fn) {
  fn().catch((error) => res.reply(error instanceof ArmillaryError ? error.message : `armillary: ${error.message}`))
}

module.exports = (robot) => {
  robot.logger.info('armillary scripts loaded: status, list, deploy, job')
  robot.respond(/(?:armillary\s+)?status\s+(\S+)\s*$/i, (res) => guard(res, async () => {
    res.reply(await status(res.match[1]))
  }))

  robot.respond(/(?:armillary\s+)?list(?:\s+(.+))?\s*$/i, (res) => guard(res, async () => {
    res.reply(await list((res.match[1] || '').split(/\s+/).filter(Boolean)))
  }))

  robot.respond(/(?:armillary\s+)?deploy\s+(.+?)\s*$/i, (res) => guard(res, async () => {
    const started = await deploy(res.match[1].split(/\s+/).filter(Boolean))
    res.reply(`deploy started: job ${started.id} ${config().url}/jobs/${started.id}`)
    follow(res, started)
  }))

  robot.respond(/(?:armillary\s+)?job\s+#?(\d+)\s*$/i, (res) => guard(res, async () => {
    res.reply(await job(res.match[1]))
  }))
}

module.exports.parseSelector = parseSelector
