// Runs an agent's code once per request and answers with what happened, as JSON.
// The code lives beside this file in agent_code.js; the value of its last expression (awaited when it is
// a promise) is the result. Output is captured for the answer and passed through to the function's log.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const util = require('node:util');
const vm = require('node:vm');

const CODE = fs.readFileSync(path.join(__dirname, 'agent_code.js'), 'utf8');

function jsonable(value) {
  if (value === undefined) return null;
  try {
    JSON.stringify(value);
    return value;
  } catch {
    return util.inspect(value);
  }
}

async function run(code) {
  const stdout = [];
  const stderr = [];
  const line = (args) => util.format(...args) + '\n';
  const capture = (sink, real) => (...args) => { sink.push(line(args)); real(...args); };
  const agentConsole = {
    log: capture(stdout, console.log), info: capture(stdout, console.info), debug: capture(stdout, console.debug),
    warn: capture(stderr, console.warn), error: capture(stderr, console.error),
  };
  const started = performance.now();
  let result = null;
  let error = null;
  try {
    const context = vm.createContext({ console: agentConsole, require, setTimeout, clearTimeout, URL, TextEncoder, TextDecoder, Buffer });
    let value = vm.runInContext(CODE, context, { filename: 'agent.js' });
    if (value && typeof value.then === 'function') value = await value;
    result = jsonable(value);
  } catch (e) {
    error = { name: (e && e.name) || 'Error', value: (e && e.message) || String(e), traceback: (e && e.stack) || '' };
  }
  return {
    stdout: stdout.join(''), stderr: stderr.join(''), result, error,
    exit_code: error ? 1 : 0, duration_ms: Math.round((performance.now() - started) * 1000) / 1000,
  };
}

const handle = async () => run(CODE);

module.exports = { handle };
