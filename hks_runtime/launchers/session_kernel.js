// A session's Node kernel: runs code in one persistent node:vm context, reporting events as JSON lines.
//
// The JavaScript twin of session_kernel.py, speaking the same protocol (started by session_agent.py inside
// the session's sandbox, built-in modules only): requests arrive one JSON line at a time on the fd
// HKS_KERNEL_IN ({"code": ..., "env": {...}}, and "typescript": true for TypeScript); events go to the fd
// HKS_KERNEL_OUT in the shape of E2B's code interpreter stream: number_of_executions, stdout/stderr
// (console.* and process.stdout/stderr.write), result (the completion value of the code, awaited when it is
// a promise), error (name, value, traceback = the stack) and end_of_execution. SIGINT interrupts the running
// code: a synchronous loop through vm's breakOnSigint, a pending await by rejecting it.
//
// State: every cell runs in the same context, so globals persist. Top-level `const`/`let` (at the start of
// a line) become `var` and `class X` becomes `var X = class X`, so a cell can be run again (as in a
// notebook). Code with a top-level `await` runs in an async function; its top-level declarations are then
// turned into assignments to globals, and its last statement, when it is an expression, is returned.
//
// A cell is a script, not an ES module, so its static `import` declarations (at the start of a line) become
// `var` bindings from `require` (rewriteImports: the default export, the namespace, named exports, as
// E2B's code interpreter takes them), and `export` before a declaration is dropped. A request with
// "typescript": true has its types stripped first (node:module's stripTypeScriptTypes; Node >= 22.13).
// These rewrites work on line starts with regular expressions, not a parser: a line of a template literal
// that starts with `import x from 'y'` is rewritten too, as one starting with `const` already was.
'use strict';

const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const readline = require('node:readline');
const util = require('node:util');
const vm = require('node:vm');
const { createRequire } = require('node:module');

const OUT = Number(process.env.HKS_KERNEL_OUT);
const IN = Number(process.env.HKS_KERNEL_IN);
const FILENAME = '<cell>';

function emit(event) {
  fs.writeSync(OUT, JSON.stringify(event) + '\n');
}

function streamWriter(name) {
  return (chunk, encoding, callback) => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    if (text) emit({ type: name, text });
    const done = typeof encoding === 'function' ? encoding : callback;
    if (typeof done === 'function') process.nextTick(done);
    return true;
  };
}

process.stdout.write = streamWriter('stdout');
process.stderr.write = streamWriter('stderr');

const cwd = process.cwd();
const sandbox = {};
// Node's globals (process, Buffer, timers, fetch, URL, TextEncoder...) for the code; the context's own
// JavaScript built-ins (Object, Array, Promise...) stay its own.
const context = vm.createContext(sandbox, { name: 'session' });
const own = new Set(Object.getOwnPropertyNames(vm.runInContext('globalThis', context)));
const enumerable = new Set(Object.keys(globalThis)); // (cheap: no value is read)

// Each global is copied at its first use: reading the descriptor of one Node builds lazily (FormData, the
// web streams) loads its implementation, which for all of them took ~60 ms of every kernel's start.
function copyGlobal(name) {
  const descriptor = Object.getOwnPropertyDescriptor(globalThis, name);
  try {
    Object.defineProperty(sandbox, name, descriptor);
  } catch {
    return descriptor.get ? descriptor.get.call(globalThis) : descriptor.value;
  }
  return sandbox[name];
}

for (const name of Object.getOwnPropertyNames(globalThis)) {
  if (own.has(name) || name === 'globalThis') continue;
  try {
    Object.defineProperty(sandbox, name, {
      configurable: true,
      enumerable: enumerable.has(name),
      get: () => copyGlobal(name),
      set: (value) => {
        Object.defineProperty(sandbox, name, { value, writable: true, configurable: true, enumerable: enumerable.has(name) });
      },
    });
  } catch {
    // a non-configurable name the context already has
  }
}
sandbox.console = new console.Console({ stdout: process.stdout, stderr: process.stderr });
sandbox.require = createRequire(path.join(cwd, '<cell>'));
sandbox.module = { exports: {} };
sandbox.exports = sandbox.module.exports;
sandbox.__filename = path.join(cwd, '<cell>');
sandbox.__dirname = cwd;

// --- modules: import/export declarations, TypeScript ----------------------------------------------------

// Node's one-time "experimental feature" warnings for what the kernel uses on the code's behalf (TypeScript's
// stripping, the dynamic import() below) would be printed on the stderr of the cell that first used them:
// they are not the cell's output.
const QUIET_WARNINGS = /stripTypeScriptTypes|USE_MAIN_CONTEXT_DEFAULT_LOADER/;
const emitWarning = process.emitWarning;
process.emitWarning = function (warning, ...rest) {
  if (QUIET_WARNINGS.test(String(warning && warning.message ? warning.message : warning))) return undefined;
  return emitWarning.call(this, warning, ...rest);
};
// `await import('m')` in a cell: Node's own ES module loader, resolving from the working directory (Node >=
// 20.12; before it, dynamic import() stays unavailable in a cell)
const DYNAMIC_IMPORT = vm.constants && vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER;
const SCRIPT = { filename: FILENAME, ...(DYNAMIC_IMPORT ? { importModuleDynamically: DYNAMIC_IMPORT } : {}) };

const cellRequire = sandbox.require;

// What a rewritten import binds (see rewriteImports): `kind` "default" is the module's default export (an ES
// module's `default`; a CommonJS module's `module.exports`, or its `default` when it says `__esModule`),
// "*" its namespace (a CommonJS module's `module.exports` as it is), none the module itself (for named
// imports). The bindings are copies taken when the cell runs, not live ones.
function importModule(specifier, kind) {
  const mod = cellRequire(specifier);
  if (kind !== 'default') return mod;
  if (util.types.isModuleNamespaceObject(mod)) {
    if (!('default' in mod)) {
      throw new SyntaxError(`The requested module '${specifier}' does not provide an export named 'default'`);
    }
    return mod.default;
  }
  return mod !== null && typeof mod === 'object' && mod.__esModule && 'default' in mod ? mod.default : mod;
}
Object.defineProperty(sandbox, '__hksImport', { value: importModule }); // (not enumerable, not writable)

const IMPORT_NAME = '[A-Za-z_$][\\w$]*';
// An import declaration from its first word: `import X from 'm'`, `import * as NS from 'm'`,
// `import { a, b as c } from 'm'`, `import X, { a } from 'm'`, `import X, * as NS from 'm'`, `import 'm'`,
// across lines, with or without import attributes (`with { type: 'json' }`, which require needs not).
const IMPORT = new RegExp(
  String.raw`import\s*(?:(?:(${IMPORT_NAME})\s*(?:,\s*)?)?` + // a default binding,
    String.raw`(?:\*\s*as\s+(${IMPORT_NAME})|\{([^{}]*)\})?\s*from\s*)?` + // a namespace or names,
    String.raw`(['"])([^'"\n]+)\4(?:\s*(?:with|assert)\s*\{[^{}]*\})?[ \t]*;?`, // the module, attributes
  'y',
);

function importBindings(match) {
  const [text, name, namespace, names, , specifier] = match;
  const from = JSON.stringify(specifier);
  const bindings = [];
  if (name) bindings.push(`${name} = __hksImport(${from}, 'default')`);
  if (namespace) bindings.push(`${namespace} = __hksImport(${from}, '*')`);
  for (const item of names === undefined ? [] : names.split(',')) {
    const parts = item.trim().split(/\s+as\s+/);
    if (!parts[0]) continue; // a trailing comma
    const [imported, local = imported] = parts;
    const key = /^['"]/.test(imported) ? imported : JSON.stringify(imported); // (`{ "a-b" as c }` too)
    const value = imported === 'default' ? `__hksImport(${from}, 'default')` : `__hksImport(${from})[${key}]`;
    bindings.push(`${local} = ${value}`);
  }
  // the declaration's line breaks kept, so that the lines after it keep their numbers in stack traces
  const breaks = '\n'.repeat((text.match(/\n/g) || []).length);
  // `import 'm'` (or `import {} from 'm'`) is run for its side effects, the cell's value staying undefined
  if (!bindings.length) return `void __hksImport(${from});${breaks}`;
  // one `var` statement: the async reading turns `var a = x, b = y` into assignments to globals
  return `var ${bindings.join(', ')};${breaks}`;
}

// Static import declarations starting a line (more than one on it, `import a from 'a'; import b from 'b'`,
// too) become `var` bindings from the kernel's require (resolved from the session's working directory).
// `import(` (dynamic), `import.meta` and the word elsewhere are left alone; a line starting with a
// declaration this does not read is left as it is too, for the parser to report.
function rewriteImports(code) {
  const starts = /^import[\s'"{*]/gm;
  let out = '';
  let done = 0;
  let start;
  while ((start = starts.exec(code))) {
    if (start.index < done) continue;
    let at = start.index;
    let replaced = '';
    for (;;) {
      IMPORT.lastIndex = at;
      const match = IMPORT.exec(code);
      if (!match) break;
      replaced += importBindings(match);
      at = IMPORT.lastIndex;
      const gap = /[ \t]*/y;
      gap.lastIndex = at;
      gap.exec(code);
      if (!/^import[\s'"{*]/.test(code.slice(gap.lastIndex, gap.lastIndex + 7))) break;
      replaced += code.slice(at, gap.lastIndex);
      at = gap.lastIndex;
    }
    if (at === start.index) continue;
    out += code.slice(done, start.index) + replaced;
    done = at;
    starts.lastIndex = at;
  }
  return out + code.slice(done);
}

// `export` before a declaration at the start of a line is dropped (`export const x = 1` defines x); a cell
// exports nothing, so `export default` is refused with a message saying what to write instead.
function rewriteExports(code) {
  if (/^export\s+default\b/m.test(code)) {
    throw new SyntaxError('export default: a cell is a script, not a module; assign the value to a name');
  }
  return code.replace(/^export\s+(?=(?:const|let|var|function|async\s+function|class)\b)/gm, '');
}

let stripTypeScriptTypes; // node:module's, looked up at the first TypeScript cell

// TypeScript to JavaScript: its types stripped (blanked out, so lines and columns stay where they were);
// a cell with what stripping cannot remove (an enum, a namespace, parameter properties) is transformed
// instead, its code printed anew (its stack traces then point into that code). No type is checked.
function stripTypes(code) {
  stripTypeScriptTypes = stripTypeScriptTypes || require('node:module').stripTypeScriptTypes;
  if (typeof stripTypeScriptTypes !== 'function') {
    throw new Error(`TypeScript needs Node 22.13 or later (this sandbox has ${process.version})`);
  }
  try {
    const lines = code.split('\n');
    // `abstract class X` is blanked to `         class X`: back to the line's start, to be rewritten as one
    return stripTypeScriptTypes(code, { mode: 'strip' })
      .split('\n')
      .map((line, i) => (/^abstract\s+class\b/.test(lines[i]) ? line.trimStart() : line))
      .join('\n');
  } catch (error) {
    if (error.code !== 'ERR_UNSUPPORTED_TYPESCRIPT_SYNTAX') throw tsError(error);
    try {
      return stripTypeScriptTypes(code, { mode: 'transform', sourceMap: false });
    } catch (transformError) {
      throw tsError(transformError);
    }
  }
}

function tsError(error) {
  // Node's TypeScript errors are SyntaxErrors whose stack starts with the cell's line (":2", the line, a
  // caret under the token), as V8's own; the frames after it are the kernel's
  if (error instanceof SyntaxError) {
    const frame = String(error.stack).split('\n\n')[0];
    error.stack = `${/^:\d+\n/.test(frame) ? `${FILENAME}${frame}\n\n` : ''}SyntaxError: ${error.message}`;
  }
  return error;
}

// --- cells ----------------------------------------------------------------------------------------------

const IDENT = '[A-Za-z_$][\\w$]*';
const NO_RETURN = /^(?:var|let|const|if|for|while|do|function|async\s+function|class|return|try|catch|finally|switch|throw|import|export|break|continue|else|case|default)\b|^[}\])]|^\/\/|^\/\*|^\*/;

function rewriteSync(code) {
  return code
    .replace(/^(?:const|let)(\s)/gm, 'var$1')
    .replace(new RegExp(`^class\\s+(${IDENT})`, 'gm'), 'var $1 = class $1');
}

function rewriteAsync(code) {
  return rewriteSync(code)
    .replace(new RegExp(`^var\\s+(${IDENT})\\s*=`, 'gm'), '$1 =')
    .replace(new RegExp(`^var\\s+(${IDENT})\\s*;?\\s*$`, 'gm'), '$1 = undefined;')
    .replace(new RegExp(`^(async\\s+)?function(\\s*\\*)?\\s+(${IDENT})`, 'gm'), '$3 = $1function$2 $3');
}

function compile(cell, typescript) {
  const code = rewriteImports(rewriteExports(typescript ? stripTypes(cell) : cell));
  const source = rewriteSync(code);
  let syncError;
  try {
    return new vm.Script(source, SCRIPT);
  } catch (error) {
    // `await` outside an async function is an identifier to the parser: `[await f()]` fails as "Unexpected
    // identifier 'f'", so any code using the word gets the async reading too.
    if (!(error instanceof SyntaxError) || !/\bawait\b|async/.test(`${error.message}\n${code}`)) throw error;
    syncError = error;
  }
  // Top-level await: the code becomes the body of an async function returning its last expression.
  const lines = rewriteAsync(code).split('\n');
  let last = lines.length - 1;
  while (last >= 0 && !lines[last].trim()) last -= 1;
  // The last statement starts at the last line not indented and not closing a bracket.
  let start = last;
  while (start > 0 && (/^\s/.test(lines[start]) || /^[}\])]/.test(lines[start]))) start -= 1;
  const candidates = [];
  if (start >= 0 && !/^\s/.test(lines[start]) && !NO_RETURN.test(lines[start])) {
    const expression = lines.slice(start, last + 1).join('\n').replace(/;\s*$/, '');
    const body = [...lines.slice(0, start), `return (${expression}\n);`].join('\n');
    candidates.push(`(async () => {\n${body}\n})()`);
  }
  candidates.push(`(async () => {\n${lines.join('\n')}\n})()`);
  let first;
  for (const candidate of candidates) {
    try {
      return new vm.Script(candidate, { ...SCRIPT, lineOffset: -1 });
    } catch (error) {
      first = first || error;
    }
  }
  throw /await|async/.test(syncError.message) ? first : syncError; // the error that names the real problem
}

function isThenable(value) {
  return value !== null && (typeof value === 'object' || typeof value === 'function') && typeof value.then === 'function';
}

function plain(value, depth = 0) {
  // JSON-safe data only (what the Python kernel's "value" carries): primitives, arrays, plain objects.
  if (depth > 20) return false;
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return true;
  if (typeof value === 'number') return Number.isFinite(value);
  if (Array.isArray(value)) return value.every((item) => plain(item, depth + 1));
  if (typeof value === 'object') {
    const proto = Object.getPrototypeOf(value);
    if (proto !== null && Object.getPrototypeOf(proto) !== null) return false;
    if (proto !== null && proto.constructor && proto.constructor.name !== 'Object') return false;
    return Object.values(value).every((item) => plain(item, depth + 1));
  }
  return false;
}

function result(value) {
  const text = typeof value === 'string' ? value : util.inspect(value, { depth: 4, maxArrayLength: 200 });
  const event = { type: 'result', text, is_main_result: true };
  if (plain(value)) event.value = value; // an HKS extra, as the Python kernel's
  return event;
}

const KERNEL_FRAME = /session_kernel\.js|\(node:vm:|\(node:internal\/|sigintHandlersWrap|at node:internal\//;

function failure(error) {
  if (error instanceof Error || (error && typeof error === 'object' && 'stack' in error && 'message' in error)) {
    let name = String(error.name || 'Error');
    if (/^Script execution was interrupted/.test(String(error.message))) name = 'KeyboardInterrupt';
    const stack = String(error.stack || '').split('\n').filter((line) => !KERNEL_FRAME.test(line)).join('\n');
    return { type: 'error', name, value: String(error.message), traceback: stack };
  }
  return { type: 'error', name: 'Error', value: util.inspect(error), traceback: `Uncaught ${util.inspect(error)}` };
}

let interrupt = null; // rejects the pending await of the running cell

process.on('SIGINT', () => {
  if (interrupt) interrupt(Object.assign(new Error('interrupted'), { name: 'KeyboardInterrupt' }));
});
process.on('uncaughtException', (error) => {
  emit({ type: 'stderr', text: `Uncaught ${error && error.stack ? error.stack : util.inspect(error)}\n` });
});
process.on('unhandledRejection', (reason) => {
  emit({ type: 'stderr', text: `Unhandled rejection: ${reason && reason.stack ? reason.stack : util.inspect(reason)}\n` });
});

async function run(code, typescript) {
  let value = compile(code, typescript).runInContext(context, { breakOnSigint: true, displayErrors: false });
  if (isThenable(value)) {
    value = await new Promise((resolve, reject) => {
      interrupt = reject;
      Promise.resolve(value).then(resolve, reject);
    }).finally(() => {
      interrupt = null;
    });
  }
  if (value !== undefined) emit(result(value));
}

function requestStream() {
  // A pipe read through the event loop (net), not the thread pool (fs): a blocking read in a pool thread
  // would keep process.exit() from ever finishing.
  return new net.Socket({ fd: IN, readable: true, writable: false });
}

async function main() {
  let count = 0;
  const requests = readline.createInterface({ input: requestStream(), crlfDelay: Infinity });
  emit({ type: 'ready' });
  for await (const line of requests) {
    if (!line.trim()) continue;
    let saved = null;
    try {
      const request = JSON.parse(line);
      count += 1;
      emit({ type: 'number_of_executions', execution_count: count });
      saved = { ...process.env };
      for (const [key, value] of Object.entries(request.env || {})) process.env[key] = String(value);
      await run(String(request.code), request.typescript === true);
    } catch (error) {
      emit(failure(error));
    } finally {
      if (saved) {
        for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
        Object.assign(process.env, saved);
      }
      emit({ type: 'end_of_execution' });
    }
  }
  process.exit(0);
}

main();
