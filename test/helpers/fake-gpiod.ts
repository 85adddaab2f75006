import { mkdtemp, rm, symlink } from 'node:fs/promises'
import { createServer, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exec } from './processes.ts'

const CLIENT = new URL('./fake-gpiod-client.c', import.meta.url).pathname
const ERRNO = { EBUSY: 'Device or resource busy', ENOENT: 'No such file or directory', EINVAL: 'Invalid argument' }
type Errno = keyof typeof ERRNO

interface Holder {
  socket: Socket
  tool: string
  dir: 'in' | 'out'
  /** gpiomon: prints an edge */
  onLevel?: (level: 0 | 1) => void
}

/** A tool's request, parsed from its command line as libgpiod 1.x or 2.x would. */
interface ToolRequest {
  tool: 'gpiomon' | 'gpioget' | 'gpioset'
  chip: string
  line: number
  activeLow: boolean
  edges: 'rising' | 'falling' | 'both'
  format?: string
  /** gpioset: the logical value */
  value?: 0 | 1
}

class Usage extends Error {}

/**
 * GPIO chips for the character-device driver on machines that have none
 * (this kernel is built without GPIOLIB: no /dev/gpiochipN, no gpio-sim):
 * fake `gpiomon`, `gpioget` and `gpioset` that take libgpiod 1.x or 2.x
 * command lines, refuse options the real ones do not know, and print what
 * the real ones print. The tools are one small C client
 * (fake-gpiod-client.c, compiled here) that starts as fast as the real
 * ones; the board parses their arguments and holds the lines. A line has
 * one holder at a time (EBUSY otherwise), as in the kernel; the test drives
 * inputs with `set` and reads what outputs were driven to in `writes`.
 */
export class FakeGpiodBoard {
  /** pass as the driver's tools directory */
  readonly bin: string
  readonly major: 1 | 2
  /** physical levels driven by gpioset, in order: [chip, line, level] */
  readonly writes: Array<[string, number, 0 | 1]> = []
  readonly #server: Server
  readonly #chips: Map<string, number>
  readonly #levels = new Map<string, 0 | 1>()
  readonly #holders = new Map<string, Holder>()

  private constructor (bin: string, major: 1 | 2, chips: Record<string, number>, server: Server) {
    this.bin = bin
    this.major = major
    this.#chips = new Map(Object.entries(chips))
    this.#server = server
  }

  static async create (options: { major: 1 | 2, chips?: Record<string, number> }): Promise<FakeGpiodBoard> {
    const bin = await mkdtemp(join(tmpdir(), `gatemesh-gpiod${options.major}-`))
    const sock = join(bin, 'board.sock')
    const server = createServer()
    const board = new FakeGpiodBoard(bin, options.major, options.chips ?? { gpiochip0: 32 }, server)
    server.on('connection', socket => { board.#serve(socket) })
    await new Promise<void>(resolve => server.listen(sock, resolve))
    const client = join(bin, 'fake-gpiod-client')
    await exec('cc', ['-O2', '-o', client, `-DFAKE_GPIOD_SOCKET="${sock}"`, CLIENT], { timeout: 120_000 })
    for (const tool of ['gpiomon', 'gpioget', 'gpioset']) await symlink(client, join(bin, tool))
    return board
  }

  /** `0`, `gpiochip0`, `/dev/gpiochip0` → `gpiochip0`, as libgpiod resolves them */
  static chipName (chip: string): string {
    const m = /^(?:\/dev\/)?(?:gpiochip)?(\d+)$/.exec(chip)
    return m == null ? chip : `gpiochip${m[1]}`
  }

  #key (chip: string, line: number): string {
    return `${FakeGpiodBoard.chipName(chip)}/${line}`
  }

  #serve (socket: Socket): void {
    let buffered = ''
    let key: string | undefined
    const out = (text: string): void => { socket.write(`1 ${text}\n`) }
    const exit = (code: number, err?: string): void => {
      if (err != null) socket.write(`2 ${err}\n`)
      socket.end(`x ${code}\n`)
    }
    socket.on('error', () => {})
    socket.on('close', () => { if (key != null && this.#holders.get(key)?.socket === socket) this.#holders.delete(key) })
    socket.setEncoding('utf8')
    socket.on('data', (data: string) => {
      if (key != null || !(buffered += data).includes('\n')) return
      const [tool = '', ...args] = buffered.slice(0, buffered.indexOf('\n')).split('\0')
      if (args.includes('--version') || args.includes('-v')) {
        out(`${tool} (libgpiod) v${this.major === 1 ? '1.6.3' : '2.2.1'}`)
        out('Copyright (C) 2017-2023 Bartosz Golaszewski')
        return exit(0)
      }
      let req: ToolRequest
      try {
        req = this.#parse(tool, args)
      } catch (err: any) {
        return exit(1, `${tool}: ${String(err.message)}`)
      }
      const lines = this.#chips.get(FakeGpiodBoard.chipName(req.chip))
      const errno: Errno | undefined = lines == null ? 'ENOENT' : req.line >= lines ? 'EINVAL' : this.#holders.has(this.#key(req.chip, req.line)) ? 'EBUSY' : undefined
      if (errno != null) return exit(1, `${tool}: ${this.#failure(req, errno)}`)
      // active-low flips both ways: logical ↔ physical
      const physical = (level: 0 | 1): 0 | 1 => (req.activeLow ? 1 - level : level) as 0 | 1
      if (req.tool === 'gpioget') {
        const logical = physical(this.level(req.chip, req.line))
        out(this.major === 1 ? String(logical) : `"${req.line}"=${logical === 1 ? 'active' : 'inactive'}`)
        return exit(0)
      }
      key = this.#key(req.chip, req.line)
      const holder: Holder = { socket, tool: req.tool, dir: req.tool === 'gpioset' ? 'out' : 'in' }
      this.#holders.set(key, holder)
      if (req.tool === 'gpioset') {
        this.#levels.set(key, physical(req.value!))
        this.writes.push([FakeGpiodBoard.chipName(req.chip), req.line, physical(req.value!)])
        return
      }
      holder.onLevel = level => {
        const rising = physical(level) === 1
        if ((req.edges === 'rising' && !rising) || (req.edges === 'falling' && rising)) return
        out(this.#event(req, rising))
      }
    })
  }

  /** The tools' argument parsing (getopt_long), for the options either generation has. */
  #parse (tool: string, args: string[]): ToolRequest {
    if (tool !== 'gpiomon' && tool !== 'gpioget' && tool !== 'gpioset') throw new Usage(`no such tool ${tool}`)
    const v1: Record<string, string> = { '--active-low': 'activeLow', '-l': 'activeLow', '--bias': 'bias:', '-B': 'bias:' }
    const v2: Record<string, string> = { '--active-low': 'activeLow', '-l': 'activeLow', '--bias': 'bias:', '-b': 'bias:', '--chip': 'chip:', '-c': 'chip:', '--consumer': 'consumer:', '-C': 'consumer:' }
    const spec = this.major === 1
      ? { gpiomon: { ...v1, '--line-buffered': 'lineBuffered', '-b': 'lineBuffered', '--format': 'format:', '-F': 'format:', '--rising-edge': 'rising', '-r': 'rising', '--falling-edge': 'falling', '-f': 'falling' }, gpioget: v1, gpioset: { ...v1, '--mode': 'mode:', '-m': 'mode:' } }[tool]
      : { gpiomon: { ...v2, '--edges': 'edges:', '-e': 'edges:', '--format': 'format:', '-F': 'format:' }, gpioget: v2, gpioset: v2 }[tool]
    const opts: Record<string, string | true> = {}
    const rest: string[] = []
    for (let i = 0; i < args.length; i++) {
      const a = args[i]!
      if (!a.startsWith('-')) { rest.push(a); continue }
      const eq = a.indexOf('=')
      const flag = a.startsWith('--') && eq > 0 ? a.slice(0, eq) : a
      const name = spec[flag]
      if (name == null) throw new Usage(`unrecognized option '${a}'`)
      if (name.endsWith(':')) {
        const value = a.startsWith('--') && eq > 0 ? a.slice(eq + 1) : args[++i]
        if (value == null) throw new Usage(`option '${flag}' requires an argument`)
        opts[name.slice(0, -1)] = value
      } else {
        opts[name] = true
      }
    }
    if (opts.bias != null && !['as-is', 'disable', 'pull-up', 'pull-down'].includes(String(opts.bias))) throw new Usage(`invalid bias: ${String(opts.bias)}`)
    const chip = this.major === 1 ? rest[0] : opts.chip
    let lineArg = this.major === 1 ? rest[1] : rest[0]
    if (typeof chip !== 'string' || lineArg == null) throw new Usage(this.major === 1 ? 'gpiochip and/or offset must be specified' : 'at least one GPIO line must be specified (the fake resolves offsets only: give --chip)')
    let value: 0 | 1 | undefined
    if (tool === 'gpioset') {
      if (this.major === 1 && opts.mode !== 'signal') throw new Usage('the fake gpioset only holds lines (--mode=signal)')
      const m = /^(\d+)=(0|1|active|inactive|on|off)$/.exec(lineArg)
      if (m == null) throw new Usage(`invalid offset<->value mapping: ${lineArg}`)
      lineArg = m[1]!
      value = ['1', 'active', 'on'].includes(m[2]!) ? 1 : 0
    }
    if (!/^\d+$/.test(lineArg)) throw new Usage(`invalid GPIO offset: ${lineArg}`)
    let edges: ToolRequest['edges'] = 'both'
    if (this.major === 1 && opts.rising === true && opts.falling !== true) edges = 'rising'
    if (this.major === 1 && opts.falling === true && opts.rising !== true) edges = 'falling'
    if (this.major === 2 && typeof opts.edges === 'string') {
      if (!['rising', 'falling', 'both'].includes(opts.edges)) throw new Usage(`invalid edges: ${opts.edges}`)
      edges = opts.edges as ToolRequest['edges']
    }
    return { tool, chip, line: Number(lineArg), activeLow: opts.activeLow === true, edges, ...(typeof opts.format === 'string' ? { format: opts.format } : {}), ...(value == null ? {} : { value }) }
  }

  #failure (req: ToolRequest, errno: Errno): string {
    if (this.major === 2) return `unable to request lines on chip /dev/${FakeGpiodBoard.chipName(req.chip)}: ${ERRNO[errno]}`
    return req.tool === 'gpiomon' ? `error waiting for events: ${ERRNO[errno]}` : req.tool === 'gpioget' ? `error reading GPIO values: ${ERRNO[errno]}` : `error setting the GPIO line values: ${ERRNO[errno]}`
  }

  /** One line of gpiomon output: `%e` is 1/0 (1.x) or 1/2 (2.x). */
  #event (req: ToolRequest, rising: boolean): string {
    const ns = process.hrtime.bigint()
    const sec = String(ns / 1_000_000_000n)
    const nsec = String(ns % 1_000_000_000n).padStart(9, '0')
    const code = rising ? '1' : (this.major === 1 ? '0' : '2')
    const fmt = req.format ?? (this.major === 1 ? `event: ${rising ? ' RISING EDGE' : 'FALLING EDGE'} offset: %o timestamp: [%s.%n]` : `%S\t${rising ? 'rising' : 'falling'}\t%o`)
    return fmt.replaceAll('%e', code).replaceAll('%o', String(req.line)).replaceAll('%s', sec).replaceAll('%n', nsec).replaceAll('%S', `${sec}.${nsec}`)
  }

  /** Which tool holds a line, if any. */
  holder (chip: string, line: number): string | undefined {
    return this.#holders.get(this.#key(chip, line))?.tool
  }

  /** Resolves once `tool` holds the line. */
  async held (chip: string, line: number, tool: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (this.holder(chip, line) !== tool) {
      if (Date.now() > deadline) throw new Error(`${tool} did not request ${this.#key(chip, line)} within ${timeoutMs} ms`)
      await new Promise(resolve => setTimeout(resolve, 10))
    }
  }

  /** Drive an input line's physical level; a monitor holding it sees the edge. */
  set (chip: string, line: number, level: 0 | 1): void {
    const k = this.#key(chip, line)
    const previous = this.#levels.get(k) ?? 0
    this.#levels.set(k, level)
    const h = this.#holders.get(k)
    if (previous !== level && h?.dir === 'in') h.onLevel?.(level)
  }

  level (chip: string, line: number): 0 | 1 {
    return this.#levels.get(this.#key(chip, line)) ?? 0
  }

  /** Cut the line's holder off, as when a chip is unbound under a running tool. */
  drop (chip: string, line: number): void {
    const k = this.#key(chip, line)
    this.#holders.get(k)?.socket.destroy()
    this.#holders.delete(k)
  }

  async close (): Promise<void> {
    for (const h of this.#holders.values()) h.socket.destroy()
    await new Promise<void>(resolve => { this.#server.close(() => { resolve() }) })
    await rm(this.bin, { recursive: true, force: true })
  }
}
