#!/usr/bin/env node
// Uploads one file to a tus server with the real tus-js-client and prints the upload URL.
//
//   node upload.mjs --endpoint http://127.0.0.1:8080/files/ --file PATH
//        [--chunk-size BYTES] [--retry] [--metadata key=value]... [--buffer]
//        [--protocol tus-v1|ietf-draft-03|ietf-draft-05] [--data-during-creation]
//
// On success the only line on stdout is `UPLOAD_URL <url>`; progress and errors go to stderr
// and any failure exits non-zero. Without --retry the client does not retry at all (retryDelays
// null), so an interrupted request fails the run; with --retry it retries after 0, 200, 500 and
// 1000 ms, asking the server for the offset (HEAD) and resuming from there, as an application
// using tus-js-client would. The file is passed as an fs.ReadStream (tus-js-client then reads
// slices by path), or with --buffer as one Buffer. --protocol picks tus-js-client's protocol:
// tus 1.0 (the default), or the IETF draft with interop version 5 (ietf-draft-03) or 6
// (ietf-draft-05). --data-during-creation sends the first chunk with the creation request
// (uploadDataDuringCreation).
// Run `npm ci --prefix tests/clients/js` once to install the pinned tus-js-client.

import fs from 'node:fs'
import process from 'node:process'
import * as tus from 'tus-js-client'

function usage(message) {
  process.stderr.write(`upload.mjs: ${message}\n`)
  process.stderr.write(
    'usage: node upload.mjs --endpoint URL --file PATH [--chunk-size BYTES] [--retry] ' +
      '[--metadata key=value]... [--buffer] [--protocol NAME] [--data-during-creation]\n',
  )
  process.exit(2)
}

function parseArgs(argv) {
  const opts = { metadata: {}, retry: false, buffer: false, chunkSize: Infinity, protocol: 'tus-v1', dataDuringCreation: false }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    const value = () => {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`)
      return argv[++i]
    }
    switch (arg) {
      case '--endpoint':
        opts.endpoint = value()
        break
      case '--file':
        opts.file = value()
        break
      case '--chunk-size': {
        const n = Number(value())
        if (!Number.isSafeInteger(n) || n <= 0) usage('--chunk-size must be a positive integer')
        opts.chunkSize = n
        break
      }
      case '--retry':
        opts.retry = true
        break
      case '--protocol':
        opts.protocol = value()
        if (!['tus-v1', 'ietf-draft-03', 'ietf-draft-05'].includes(opts.protocol)) {
          usage('--protocol is tus-v1, ietf-draft-03 or ietf-draft-05')
        }
        break
      case '--data-during-creation':
        opts.dataDuringCreation = true
        break
      case '--buffer':
        opts.buffer = true
        break
      case '--metadata': {
        const kv = value()
        const eq = kv.indexOf('=')
        if (eq <= 0) usage('--metadata takes key=value')
        opts.metadata[kv.slice(0, eq)] = kv.slice(eq + 1)
        break
      }
      default:
        usage(`unknown argument ${arg}`)
    }
  }
  if (!opts.endpoint) usage('--endpoint is required')
  if (!opts.file) usage('--file is required')
  return opts
}

const opts = parseArgs(process.argv.slice(2))
const size = fs.statSync(opts.file).size
const input = opts.buffer ? fs.readFileSync(opts.file) : fs.createReadStream(opts.file)

let lastReported = -1
const upload = new tus.Upload(input, {
  endpoint: opts.endpoint,
  protocol: opts.protocol,
  uploadDataDuringCreation: opts.dataDuringCreation,
  chunkSize: opts.chunkSize,
  uploadSize: size,
  metadata: opts.metadata,
  retryDelays: opts.retry ? [0, 200, 500, 1000] : null,
  storeFingerprintForResuming: false,
  removeFingerprintOnSuccess: false,
  onProgress(sent, total) {
    const pct = Math.floor((sent / total) * 10)
    if (pct !== lastReported) {
      lastReported = pct
      process.stderr.write(`upload.mjs: ${sent}/${total} bytes\n`)
    }
  },
  onShouldRetry(err, attempt, options) {
    const status = err.originalResponse ? err.originalResponse.getStatus() : 0
    process.stderr.write(`upload.mjs: retry ${attempt + 1} after: ${err.message}\n`)
    // tus-js-client's own rule: anything but a 4xx, and 409/423 too.
    return !(status >= 400 && status < 500) || status === 409 || status === 423
  },
  onError(err) {
    process.stderr.write(`upload.mjs: upload failed: ${err.message || err}\n`)
    process.exit(1)
  },
  onSuccess() {
    process.stdout.write(`UPLOAD_URL ${upload.url}\n`)
  },
})
upload.start()
