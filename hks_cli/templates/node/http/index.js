'use strict';

/**
 * __NAME__: an HTTP function.
 *
 * The platform calls `handle` for every request except the health checks. `context` describes the
 * request (method, query, headers, body); `body` is the parsed request body (JSON or form), if any.
 * Return an object to answer with JSON, or { statusCode, headers, body } to choose the response.
 */
const handle = async (context, body) => {
  if (['POST', 'PUT', 'PATCH'].includes(context.method)) {
    console.log(`__NAME__ received a ${context.method} with ${JSON.stringify(body ?? null)}`);
    return { received: body ?? null };
  }
  const name = (context.query && context.query.name) || 'world';
  return { message: `Hello, ${name}!` };
};

module.exports = { handle };
