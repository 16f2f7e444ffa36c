'use strict';
// Serves the function in /app with faas-js-runtime (the runtime `kn func` uses for Node) on an inherited
// listening socket: the runtime daemon binds 127.0.0.1:<port> and passes the fd as HKS_LISTEN_FD, so the
// function needs no network of its own (socket activation).
//
// faas-js-runtime's start(func, options) always calls fastify.listen({ port, host: '::' }); the first
// net.Server#listen call is redirected to the inherited fd instead. Everything else (routes, health
// endpoints, CloudEvents handling, func.yaml, SIGTERM shutdown) is faas-js-runtime's own behaviour.
//
// HKS_PREWARM=1: load the runtime first, then wait for one line on stdin before loading the function, so a
// sandbox can be started ahead of time and specialised later. The line may be a JSON object
// {"env": {...}}: the function's own environment (K_SERVICE, user variables), set before its code loads.
//
// One bug of faas-js-runtime 4.0.1 is worked around here (adaptOverloadProtection, below): its health
// endpoints answered an overloaded probe with a TypeError that went into the function's own log.

const net = require('net');
const path = require('path');

const RUNTIME = process.env.HKS_FAAS_JS_RUNTIME || '/layer/runtime/node_modules/faas-js-runtime';
adaptOverloadProtection(); // before faas-js-runtime loads: its health-check module builds its guard at load
const { start, defaults } = require(RUNTIME);
const { loadFunction } = require(path.join(RUNTIME, 'lib', 'function-loader.js'));

// faas-js-runtime's /health/readiness and /health/liveness (lib/health-check.js) call overload-protection's
// 'http' guard with Fastify's (request, reply), but that guard is written for Node's (req, res): while the
// event loop lags past 42 ms (as it mostly does at start-up, and behind a CPU-bound request) it sets
// res.statusCode = 503 and then calls res.setHeader('Retry-After', 1), which a Fastify Reply lacks. The
// TypeError made the probe's 503 and a level-50 line, "res.setHeader is not a function", in the function's
// stdout: our probes put such lines into the tenant's log. So the guard faas-js-runtime builds is handed a
// Node-shaped view of the reply and answers as overload-protection means to (503, Retry-After, its reason;
// 200 "OK" otherwise). A faas-js-runtime that passes a real response (reply.raw), or no longer uses
// overload-protection, is left as it is.
function adaptOverloadProtection() {
  let id;
  try {
    id = require.resolve('overload-protection', { paths: [RUNTIME] });
  } catch {
    return;
  }
  const protection = require(id);
  require.cache[id].exports = function protectionForFastify(framework, opts) {
    const guard = protection(framework, opts);
    if (framework !== 'http') return guard;
    const adapted = function overloadProtection(req, res, ...rest) {
      // ...rest keeps the argument count: the guard returns instead of calling next with fewer than three
      return guard(req, isFastifyReply(res) ? nodeResponse(res) : res, ...rest);
    };
    Object.setPrototypeOf(adapted, guard); // its state (overload, eventLoopDelay, stop) stays readable
    return adapted;
  };
}

function isFastifyReply(res) {
  return typeof res.setHeader !== 'function' && typeof res.send === 'function' && 'raw' in res;
}

function nodeResponse(reply) {
  return {
    get statusCode() {
      return reply.statusCode;
    },
    set statusCode(code) {
      reply.code(code);
    },
    setHeader(name, value) {
      reply.header(name, value);
      return this;
    },
    end(body) {
      reply.send(body);
    },
  };
}

function listenOnInheritedFd(fd) {
  const originalListen = net.Server.prototype.listen;
  net.Server.prototype.listen = function listen(...args) {
    net.Server.prototype.listen = originalListen;
    const callback = typeof args[args.length - 1] === 'function' ? args[args.length - 1] : undefined;
    return originalListen.call(this, { fd }, callback);
  };
}

function waitForLine() {
  return new Promise(resolve => {
    let buffered = '';
    const onData = chunk => {
      buffered += chunk;
      if (buffered.includes('\n')) {
        process.stdin.off('data', onData);
        process.stdin.pause();
        resolve(buffered.split('\n')[0]);
      }
    };
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', onData);
    process.stdin.once('end', () => resolve(buffered));
  });
}

function applySpecialisation(line) {
  const trimmed = line.trim();
  if (!trimmed.startsWith('{')) return;
  const { env } = JSON.parse(trimmed);
  for (const [key, value] of Object.entries(env || {})) {
    process.env[key] = String(value);
  }
}

async function main() {
  const fd = Number(process.env.HKS_LISTEN_FD);
  if (!Number.isInteger(fd) || fd < 0) {
    throw new Error('HKS_LISTEN_FD must name the inherited listening socket');
  }
  if (process.env.HKS_PREWARM === '1') {
    applySpecialisation(await waitForLine());
  }
  const options = {
    logLevel: process.env.FUNC_LOG_LEVEL || defaults.LOG_LEVEL,
    port: defaults.PORT,
    includeRaw: process.env.FUNC_INCLUDE_RAW ? true : defaults.INCLUDE_RAW,
    bodyLimit: process.env.FUNC_BODY_LIMIT || defaults.BODY_LIMIT,
  };
  const code = await loadFunction(path.join(process.cwd(), 'index.js'));
  if (typeof code !== 'function' && typeof code !== 'object') {
    throw new TypeError(`Cannot find Invokable function 'handle' in ${code}`);
  }
  listenOnInheritedFd(fd);
  await start(code, options);
}

main().catch(error => {
  console.error(`⛔ ${error && error.stack ? error.stack : error}`);
  process.exit(1);
});
