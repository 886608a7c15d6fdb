// A real js-libp2p 3.x peer for flarelab's interop tests.
//
//   node --import ./polyfill.mjs peer.mjs [options]
//
// Machine-readable events go to stdout, one JSON object per line, each with an
// "event" key; human logs go to stderr. The events are documented in README.md.
// Without --exit-after-actions the peer keeps serving (ping, identify, identify
// push, perf, echo) until stdin closes or it gets SIGTERM/SIGINT.

import { AsyncLocalStorage } from 'node:async_hooks'
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { noise } from '@chainsafe/libp2p-noise'
import { quic } from '@chainsafe/libp2p-quic'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { dcutr } from '@libp2p/dcutr'
import { identify, identifyPush } from '@libp2p/identify'
import { mplex } from '@libp2p/mplex'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

const ECHO_PROTOCOL = '/flarelab/echo/1.0.0'
const PERF_PROTOCOL = '/perf/1.0.0'
const QUIC_LISTEN = '/ip4/127.0.0.1/udp/0/quic-v1'
const BLOCK_SIZE = 64 * 1024 // what @libp2p/perf writes per send
const MAX_ECHO_BYTES = 256 * 1024 * 1024 // the echo client keeps what it sent
const MUXERS = {
  yamux: () => yamux(),
  mplex: () => mplex()
}
const USAGE = `usage: node --import ./polyfill.mjs peer.mjs [options]
  --listen MULTIADDR       listen address, repeatable (default /ip4/127.0.0.1/tcp/0)
  --quic                   also listen on /ip4/127.0.0.1/udp/0/quic-v1 (QUIC is always dialable)
  --muxer LIST             yamux | mplex | yamux,mplex | mplex,yamux (preference order; default yamux,mplex)
  --seed HEX32             64 hex digits: deterministic Ed25519 key
  --agent STRING           identify agentVersion
  --relay-server           serve circuit relay v2 (hop), with its default limits
                           (the relay transport, for /p2p-circuit listen and dial
                           addresses, is added when one is given)
  --dcutr                  run DCUtR (@libp2p/dcutr): upgrade relayed connections
  --dial MULTIADDR         dial this peer, then run the actions below in this order:
  --identify                 wait for identify of the dialled peer (emits peer:identify)
  --ping N                   N pings, one 'ping' event each
  --echo BYTES               open ${ECHO_PROTOCOL}, send BYTES random bytes, read back, compare
  --perf-upload BYTES        /perf/1.0.0: upload BYTES ...
  --perf-download BYTES      ... and ask for BYTES back (either alone means the other is 0)
  --timeout MS             limit for the dial and for each action (default 30000)
  --exit-after-actions     stop after the actions (exit 1 if any failed)
  --ignore-stdin           do not stop when stdin closes (stop with SIGTERM)
  --help`

const startedAt = performance.now()
const bigintTag = `bigint:${randomBytes(8).toString('hex')}:`
const bigintPattern = new RegExp(`"${bigintTag}(\\d+)"`, 'g')
let logPrefix = '[js-peer]'

/** Write one event as a JSON line on stdout; bigints become exact JSON integers. */
function emit (event, fields = {}) {
  const line = JSON.stringify(
    { event, ...fields, at: Math.round((performance.now() - startedAt) * 1000) / 1000 },
    (_key, value) => (typeof value === 'bigint' ? `${bigintTag}${value}` : value)
  ).replace(bigintPattern, '$1')
  process.stdout.write(line + '\n')
}

/** Write a human log line on stderr. */
function log (...parts) {
  process.stderr.write(`${logPrefix} ${parts.join(' ')}\n`)
}

/** Describe an error in one line: its name and message. */
function describe (err) {
  if (err == null) return 'unknown error'
  const name = err.name != null && err.name !== 'Error' ? `${err.name}: ` : ''
  return `${name}${err.message ?? String(err)}`
}

class UsageError extends Error {}

/** Parse a non-negative integer option, or throw a UsageError. */
function parseCount (name, text, min = 0) {
  if (text == null) return undefined
  if (!/^\d+$/.test(text)) throw new UsageError(`--${name} wants a non-negative integer, got ${JSON.stringify(text)}`)
  const value = Number(text)
  if (!Number.isSafeInteger(value) || value < min) throw new UsageError(`--${name} must be an integer >= ${min}, got ${text}`)
  return value
}

/** Turn argv into a validated options object. */
function parseOptions (argv) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      listen: { type: 'string', multiple: true },
      quic: { type: 'boolean', default: false },
      muxer: { type: 'string', default: 'yamux,mplex' },
      seed: { type: 'string' },
      agent: { type: 'string' },
      'relay-server': { type: 'boolean', default: false },
      dcutr: { type: 'boolean', default: false },
      dial: { type: 'string' },
      identify: { type: 'boolean', default: false },
      ping: { type: 'string' },
      echo: { type: 'string' },
      'perf-upload': { type: 'string' },
      'perf-download': { type: 'string' },
      timeout: { type: 'string', default: '30000' },
      'exit-after-actions': { type: 'boolean', default: false },
      'ignore-stdin': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false }
    }
  })
  const muxers = values.muxer.split(',').map(m => m.trim())
  for (const m of muxers) {
    if (!(m in MUXERS)) throw new UsageError(`--muxer: unknown muxer ${JSON.stringify(m)} (want yamux, mplex)`)
  }
  if (new Set(muxers).size !== muxers.length) throw new UsageError('--muxer: a muxer is named twice')
  if (values.seed != null && !/^[0-9a-fA-F]{64}$/.test(values.seed)) {
    throw new UsageError('--seed wants exactly 64 hex digits (32 bytes)')
  }
  const opts = {
    help: values.help,
    listen: [...(values.listen ?? ['/ip4/127.0.0.1/tcp/0']), ...(values.quic ? [QUIC_LISTEN] : [])],
    muxers,
    seed: values.seed,
    agent: values.agent,
    relayServer: values['relay-server'],
    dcutr: values.dcutr,
    relayClient: [...(values.listen ?? []), values.dial ?? ''].some(a => a.includes('/p2p-circuit')),
    dial: values.dial,
    identify: values.identify,
    ping: parseCount('ping', values.ping, 1),
    echo: parseCount('echo', values.echo, 0),
    perfUpload: parseCount('perf-upload', values['perf-upload']),
    perfDownload: parseCount('perf-download', values['perf-download']),
    timeout: parseCount('timeout', values.timeout, 1),
    exitAfterActions: values['exit-after-actions'],
    ignoreStdin: values['ignore-stdin']
  }
  opts.perf = opts.perfUpload != null || opts.perfDownload != null
  if (opts.echo != null && opts.echo > MAX_ECHO_BYTES) throw new UsageError(`--echo is limited to ${MAX_ECHO_BYTES} bytes`)
  const hasActions = opts.identify || opts.ping != null || opts.echo != null || opts.perf
  if (hasActions && opts.dial == null) throw new UsageError('actions need --dial MULTIADDR')
  for (const addr of [...opts.listen, ...(opts.dial != null ? [opts.dial] : [])]) {
    try {
      multiaddr(addr)
    } catch (err) {
      throw new UsageError(`bad multiaddr ${JSON.stringify(addr)}: ${describe(err)}`)
    }
  }
  return opts
}

/** Read a stream to its end, handing each chunk to onData; settle when the remote closes its write side. */
function readStream (stream, onData, signal) {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      stream.removeEventListener('message', onMessage)
      stream.removeEventListener('end', onEnd)
      stream.removeEventListener('close', onClose)
      signal?.removeEventListener('abort', onAbort)
    }
    const fail = (err) => {
      cleanup()
      reject(err)
    }
    const onMessage = (evt) => {
      try {
        onData(evt.data)
      } catch (err) {
        fail(err)
        stream.abort(err)
      }
    }
    const onEnd = () => {
      cleanup()
      resolve()
    }
    const onClose = (evt) => {
      if (evt.error != null) fail(evt.error)
      else if (stream.readableEnded) onEnd()
    }
    const onAbort = () => {
      fail(signal.reason)
      stream.abort(signal.reason)
    }
    if (signal?.aborted) {
      onAbort()
      return
    }
    stream.addEventListener('message', onMessage)
    stream.addEventListener('end', onEnd)
    stream.addEventListener('close', onClose)
    signal?.addEventListener('abort', onAbort)
    if (stream.readableEnded) onEnd()
  })
}

/** Send `total` bytes taken from `block` (repeated, or sliced from `data`), waiting for drain. */
async function writeBytes (stream, { data, block, total }, signal) {
  let sent = 0
  while (sent < total) {
    const size = Math.min(BLOCK_SIZE, total - sent)
    const chunk = data != null ? data.subarray(sent, sent + size) : block.subarray(0, size)
    sent += size
    if (!stream.send(chunk)) await stream.onDrain({ signal })
  }
}

/** Wait for a stream's reader and writer; on the first failure abort the stream and rethrow. */
async function settleOrAbort (stream, tasks) {
  try {
    await Promise.all(tasks)
  } catch (err) {
    stream.abort(err)
    throw err
  }
}

/** Serve /flarelab/echo/1.0.0: write back every byte as it arrives, close when the remote closes. */
async function handleEcho (stream, connection) {
  let bytes = 0
  const onDrain = () => {
    if (stream.readStatus === 'paused') stream.resume()
  }
  stream.addEventListener('drain', onDrain)
  try {
    await readStream(stream, (chunk) => {
      bytes += chunk.byteLength
      if (!stream.send(chunk)) stream.pause() // backpressure: resume on drain
    })
    await stream.close()
    emit('echo:served', { peerId: connection.remotePeer.toString(), bytes })
  } catch (err) {
    emit('error', { where: 'echo-server', peerId: connection.remotePeer.toString(), message: describe(err) })
    stream.abort(err)
  } finally {
    stream.removeEventListener('drain', onDrain)
  }
}

/** Serve /perf/1.0.0: read the u64 size, read to EOF, then send that many bytes and close. */
async function handlePerf (stream, connection) {
  const header = new Uint8Array(8)
  let headerBytes = 0
  let uploadBytes = 0
  try {
    await readStream(stream, (chunk) => {
      let offset = 0
      if (headerBytes < 8) {
        const take = Math.min(8 - headerBytes, chunk.byteLength)
        header.set(chunk.subarray(0, take), headerBytes)
        headerBytes += take
        offset = take
      }
      uploadBytes += chunk.byteLength - offset
    })
    if (headerBytes < 8) throw new Error(`stream ended after ${headerBytes} of the 8 length bytes`)
    const wanted = new DataView(header.buffer).getBigUint64(0, false)
    // u64 max means "until the client resets"; 2**53 bytes is as good as forever
    const total = wanted > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(wanted)
    await writeBytes(stream, { block: new Uint8Array(BLOCK_SIZE), total })
    await stream.close()
    emit('perf:served', { peerId: connection.remotePeer.toString(), uploadBytes, downloadBytes: total })
  } catch (err) {
    emit('error', { where: 'perf-server', peerId: connection.remotePeer.toString(), message: describe(err) })
    stream.abort(err)
  }
}

/** Describe a connection for the connection:open / connection:close events. */
function connectionFields (conn) {
  return {
    peerId: conn.remotePeer.toString(),
    remoteAddr: conn.remoteAddr.toString(),
    direction: conn.direction,
    muxer: conn.multiplexer ?? null,
    encryption: conn.encryption ?? null,
    id: conn.id,
    // a relayed connection carries the limits its relay announced
    limited: conn.limits != null
  }
}

/** Turn an IdentifyResult into the fields of the peer:identify event. */
function identifyFields (result, push) {
  const record = result.signedPeerRecord
  return {
    peerId: result.peerId.toString(),
    push,
    protocols: result.protocols,
    listenAddrs: result.listenAddrs.map(a => a.toString()),
    observedAddr: result.observedAddr?.toString() ?? null,
    observedAddrHex: result.observedAddr != null ? Buffer.from(result.observedAddr.bytes).toString('hex') : null,
    agentVersion: result.agentVersion ?? null,
    protocolVersion: result.protocolVersion ?? null,
    // js-libp2p only reports a record after openAndCertify verified its signature and
    // peer id; a bad record fails the whole identify instead (an 'error' event here)
    signedPeerRecord: record != null
      ? { present: true, verified: true, seq: record.seq, addrs: record.addresses.map(a => a.toString()) }
      : { present: false, verified: false, seq: null, addrs: [] },
    remoteAddr: result.connection?.remoteAddr.toString() ?? null
  }
}

/** Create the libp2p node and hook its events to stdout. */
async function createNode (opts) {
  const privateKey = opts.seed != null
    ? await generateKeyPairFromSeed('Ed25519', Buffer.from(opts.seed, 'hex'))
    : undefined
  const node = await createLibp2p({
    start: false,
    privateKey,
    nodeInfo: opts.agent != null ? { userAgent: opts.agent } : undefined,
    addresses: { listen: opts.listen },
    // QUIC secures and multiplexes by itself: /tls/1.0.0 and native streams, no muxer;
    // the circuit relay transport (which also serves the stop protocol) only when a
    // listen or dial address is a /p2p-circuit one
    transports: [tcp(), quic(), ...(opts.relayClient ? [circuitRelayTransport()] : [])],
    connectionEncrypters: [noise()],
    streamMuxers: opts.muxers.map(name => MUXERS[name]()),
    services: {
      identify: identify(),
      identifyPush: identifyPush(),
      // two outbound pings: the connection monitor pings every connection every
      // 10 s on this protocol, and with the default of one a --ping that overlaps
      // it fails (or the monitor fails and aborts the whole connection)
      ping: ping({ maxOutboundStreams: 2 }),
      ...(opts.relayServer ? { relay: circuitRelayServer() } : {}),
      ...(opts.dcutr ? { dcutr: dcutr() } : {})
    }
  })
  logPrefix = `[js-peer ${node.peerId.toString().slice(-6)}]`

  // peer:identify comes from both identify (we asked) and identify push (they told
  // us); the push handler runs inside this storage so the listener can tell them apart
  const pushContext = new AsyncLocalStorage()
  const pushService = node.services.identifyPush
  const handlePush = pushService.handleProtocol
  pushService.handleProtocol = (stream, connection) => pushContext.run({ push: true }, async () => {
    try {
      await handlePush(stream, connection)
    } catch (err) {
      emit('error', { where: 'identify-push', peerId: connection.remotePeer.toString(), message: describe(err) })
      throw err
    }
  })
  // every identify the node runs (on each new connection, and --identify) is
  // recorded so a failure becomes an 'error' event and --identify can await it
  const identifyService = node.services.identify
  const runIdentify = identifyService.identify.bind(identifyService)
  const identifyRuns = new WeakMap()
  identifyService.identify = (connection, options) => {
    const run = runIdentify(connection, options).catch((err) => {
      emit('error', { where: 'identify', peerId: connection.remotePeer.toString(), message: describe(err) })
      throw err
    })
    identifyRuns.set(connection, run)
    return run
  }
  node.identifyRun = (connection) => identifyRuns.get(connection) ?? identifyService.identify(connection)

  node.addEventListener('connection:open', (evt) => emit('connection:open', connectionFields(evt.detail)))
  node.addEventListener('connection:close', (evt) => emit('connection:close', connectionFields(evt.detail)))
  node.addEventListener('peer:identify', (evt) => {
    emit('peer:identify', identifyFields(evt.detail, pushContext.getStore()?.push === true))
  })

  await node.handle(ECHO_PROTOCOL, handleEcho, { maxInboundStreams: 8, runOnLimitedConnection: true })
  // the limits @libp2p/perf uses: one stream each way, never over a limited (relayed) connection
  await node.handle(PERF_PROTOCOL, handlePerf, { maxInboundStreams: 1, maxOutboundStreams: 1, runOnLimitedConnection: false })
  return node
}

/** Wait for the identify of `conn` that the node started when the connection opened. */
async function actionIdentify (node, conn) {
  await node.identifyRun(conn) // peer:identify is emitted by the listener
}

/** Ping the dialled peer n times over the existing connection. */
async function actionPing (node, conn, n, timeout) {
  for (let seq = 1; seq <= n; seq++) {
    const rtt = await node.services.ping.ping(conn.remotePeer, { signal: AbortSignal.timeout(timeout) })
    emit('ping', { peerId: conn.remotePeer.toString(), seq, rtt })
  }
}

/** Send `bytes` random bytes on the echo protocol and check they come back unchanged. */
async function actionEcho (conn, bytes, timeout) {
  const signal = AbortSignal.timeout(timeout)
  const start = performance.now()
  const stream = await conn.newStream(ECHO_PROTOCOL, { signal })
  const payload = randomBytes(bytes)
  const received = Buffer.alloc(bytes)
  let got = 0
  await settleOrAbort(stream, [
    readStream(stream, (chunk) => {
      if (got + chunk.byteLength > bytes) throw new Error(`echo returned more than the ${bytes} bytes sent`)
      received.set(chunk.subarray(), got)
      got += chunk.byteLength
    }, signal),
    (async () => {
      await writeBytes(stream, { data: payload, total: bytes }, signal)
      await stream.close({ signal })
    })()
  ])
  const ok = got === bytes && payload.equals(received)
  emit('echo', { peerId: conn.remotePeer.toString(), ok, bytes: got, sent: bytes, ms: performance.now() - start })
  if (!ok) throw new Error(got === bytes ? 'echoed bytes differ from the bytes sent' : `echoed ${got} of ${bytes} bytes`)
}

/** Run one /perf/1.0.0 exchange on the existing connection. */
async function actionPerf (conn, uploadBytes, downloadBytes, timeout) {
  const signal = AbortSignal.timeout(timeout)
  const start = performance.now()
  const stream = await conn.newStream(PERF_PROTOCOL, { signal })
  const header = new Uint8Array(8)
  new DataView(header.buffer).setBigUint64(0, BigInt(downloadBytes), false)
  let received = 0
  let uploadDone = start
  await settleOrAbort(stream, [
    readStream(stream, (chunk) => { received += chunk.byteLength }, signal),
    (async () => {
      stream.send(header)
      await writeBytes(stream, { block: new Uint8Array(BLOCK_SIZE), total: uploadBytes }, signal)
      await stream.close({ signal })
      uploadDone = performance.now()
    })()
  ])
  const end = performance.now()
  const ok = received === downloadBytes
  emit('perf', {
    peerId: conn.remotePeer.toString(),
    ok,
    uploadBytes,
    downloadBytes: received,
    ms: end - start,
    uploadMs: uploadDone - start,
    downloadMs: end - uploadDone
  })
  if (!ok) throw new Error(`perf: expected ${downloadBytes} bytes back, got ${received}`)
}

/** Dial and run the requested actions in order; return the number that failed. */
async function runActions (node, opts) {
  let conn
  try {
    conn = await node.dial(multiaddr(opts.dial), { signal: AbortSignal.timeout(opts.timeout) })
  } catch (err) {
    emit('error', { where: 'dial', message: describe(err) })
    return 1
  }
  const actions = []
  if (opts.identify) actions.push(['identify', () => actionIdentify(node, conn)])
  if (opts.ping != null) actions.push(['ping', () => actionPing(node, conn, opts.ping, opts.timeout)])
  if (opts.echo != null) actions.push(['echo', () => actionEcho(conn, opts.echo, opts.timeout)])
  if (opts.perf) {
    actions.push(['perf', () => actionPerf(conn, opts.perfUpload ?? 0, opts.perfDownload ?? 0, opts.timeout)])
  }
  let failures = 0
  for (const [where, action] of actions) {
    try {
      await action()
    } catch (err) {
      failures++
      // identify failures were already reported by the identify hook
      if (where !== 'identify') emit('error', { where, peerId: conn.remotePeer.toString(), message: describe(err) })
      log(`${where} failed: ${describe(err)}`)
    }
  }
  return failures
}

/** Handle one JSON command line from stdin. */
async function runCommand (node, line) {
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (err) {
    emit('error', { where: 'command', message: `not JSON: ${describe(err)}` })
    return
  }
  if (cmd?.cmd === 'push') {
    // sendPushMessage is what push() runs after its 1 s debounce; call it directly so
    // the push goes out now and 'identify-push:sent' means it has been written. The
    // record it signs has seq = Date.now() at signing, so seq >= seqAtLeast tells this
    // push from the one every js-libp2p node sends about a second after it starts
    const svc = node.services.identifyPush
    const seqAtLeast = Date.now()
    await (typeof svc.sendPushMessage === 'function' ? svc.sendPushMessage() : svc.push())
    emit('identify-push:sent', { connections: node.getConnections().length, seqAtLeast })
  } else {
    emit('error', { where: 'command', message: `unknown command ${JSON.stringify(cmd?.cmd)}` })
  }
}

async function main () {
  let opts
  try {
    opts = parseOptions(process.argv.slice(2))
  } catch (err) {
    emit('error', { where: 'args', message: describe(err) })
    process.stderr.write(`${describe(err)}\n${USAGE}\n`)
    process.exit(2)
  }
  if (opts.help) {
    process.stdout.write(USAGE + '\n')
    process.exit(0)
  }

  let failures = 0
  let stopping = false
  let node
  const stop = async (reason) => {
    if (stopping) return
    stopping = true
    log(`stopping (${reason})`)
    try {
      await node?.stop()
    } catch (err) {
      log(`stop failed: ${describe(err)}`)
    }
    emit('stopped', { reason, ok: failures === 0 })
    process.exitCode = failures === 0 ? 0 : 1
    // libp2p leaves timers behind; do not wait for them
    setImmediate(() => process.exit())
  }
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, () => {
      if (stopping) process.exit(failures === 0 ? 143 : 1)
      stop(sig)
    })
  }
  process.on('unhandledRejection', (err) => {
    log(`unhandled rejection: ${err?.stack ?? describe(err)}`)
    emit('error', { where: 'unhandled', message: describe(err) })
  })

  try {
    node = await createNode(opts)
    await node.start()
  } catch (err) {
    emit('error', { where: 'start', message: describe(err) })
    log(err?.stack ?? describe(err))
    process.exit(1)
  }
  const addrs = node.getMultiaddrs().map(a => a.toString())
  emit('listening', { peerId: node.peerId.toString(), addrs })
  log(`listening on ${addrs.join(' ')}`)

  if (!opts.ignoreStdin) {
    const lines = createInterface({ input: process.stdin, crlfDelay: Infinity })
    lines.on('line', (line) => {
      if (line.trim() !== '') {
        runCommand(node, line).catch(err => emit('error', { where: 'command', message: describe(err) }))
      }
    })
    lines.on('close', () => stop('stdin closed'))
  }

  if (opts.dial != null) {
    failures = await runActions(node, opts)
    emit('done', { ok: failures === 0, failures })
    if (opts.exitAfterActions) await stop('actions done')
  }
}

main().catch((err) => {
  emit('error', { where: 'main', message: describe(err) })
  log(err?.stack ?? describe(err))
  process.exit(1)
})
