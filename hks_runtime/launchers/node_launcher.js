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
// sandbox can be started ahead of time and specialised later.

const net = require('net');
const path = require('path');

const RUNTIME = process.env.HKS_FAAS_JS_RUNTIME || '/layer/runtime/node_modules/faas-js-runtime';
const { start, defaults } = require(RUNTIME);
const { loadFunction } = require(path.join(RUNTIME, 'lib', 'function-loader.js'));

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
    process.stdin.once('data', () => {
      process.stdin.pause();
      resolve();
    });
    process.stdin.once('end', resolve);
  });
}

async function main() {
  const fd = Number(process.env.HKS_LISTEN_FD);
  if (!Number.isInteger(fd) || fd < 0) {
    throw new Error('HKS_LISTEN_FD must name the inherited listening socket');
  }
  if (process.env.HKS_PREWARM === '1') {
    await waitForLine();
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
