'use strict';

// Run with `node --test` (or `npm test`): no packages to install.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { handle } = require('../index.js');

test('an event is acknowledged with its attributes and data', async () => {
  const event = { type: 'com.example.ping', source: '/tests', id: 'e-1', data: { n: 1 } };
  const result = await handle({ method: 'POST', headers: {} }, event);
  assert.deepEqual(result, { received: { type: 'com.example.ping', source: '/tests', id: 'e-1', data: { n: 1 } } });
});

test('a request without an event is refused with 400', async () => {
  const result = await handle({ method: 'POST', headers: {} }, undefined);
  assert.equal(result.statusCode, 400);
});
