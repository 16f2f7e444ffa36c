'use strict';

/**
 * __NAME__: a CloudEvents function.
 *
 * The platform decodes the incoming CloudEvent (binary or structured mode) and calls
 * `handle(context, event)`; `event` has `type`, `source`, `id` and `data`. Return an object to answer
 * with JSON, or { statusCode, body } to choose the response.
 */
const handle = async (context, event) => {
  if (!event || !event.type) {
    return { statusCode: 400, body: { error: 'expected a CloudEvent' } };
  }
  console.log(`__NAME__ received ${event.type} ${event.id} from ${event.source}`);
  return { received: { type: event.type, source: event.source, id: event.id, data: event.data ?? null } };
};

module.exports = { handle };
