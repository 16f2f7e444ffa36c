"""Run with `python -m pytest` or `python -m unittest discover tests` (needs `cloudevents`, which
func-python brings)."""

import asyncio
import unittest

from cloudevents.core.v1.event import CloudEvent
from function import new


class FunctionTest(unittest.TestCase):
    def test_an_event_is_answered_with_a_response_event(self):
        sent = []

        async def send(event):
            sent.append(event)

        incoming = CloudEvent(
            attributes={"type": "com.example.ping", "source": "/tests", "id": "e-1"}, data={"n": 1}
        )
        asyncio.run(new().handle({"type": "http", "event": incoming}, None, send))
        (response,) = sent
        self.assertEqual(response.get_id(), "response-e-1")
        self.assertEqual(response.get_data(), {"received": {"type": "com.example.ping", "data": {"n": 1}}})


if __name__ == "__main__":
    unittest.main()
