'use strict';

// Run with `node --test` (or `npm test`): no packages to install.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { handle } = require('../index.js');

test('GET greets the world by default', async () => {
  const result = await handle({ method: 'GET', query: {}, headers: {} });
  assert.deepEqual(result, { message: 'Hello, world!' });
});

test('GET greets by the name in the query', async () => {
  const result = await handle({ method: 'GET', query: { name: 'Ada' }, headers: {} });
  assert.deepEqual(result, { message: 'Hello, Ada!' });
});

test('POST echoes the body back', async () => {
  const result = await handle({ method: 'POST', query: {}, headers: {} }, { x: 1 });
  assert.deepEqual(result, { received: { x: 1 } });
});
