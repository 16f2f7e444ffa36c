"""Run with `python -m pytest` or `python -m unittest discover tests`: no packages to install."""

import asyncio
import json
import unittest

from function import new


def call(method: str, *, body: bytes = b"", query: bytes = b""):
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/", "query_string": query, "headers": []}
    asyncio.run(new().handle(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


class FunctionTest(unittest.TestCase):
    def test_get_greets_the_world_by_default(self):
        self.assertEqual(call("GET"), (200, {"message": "Hello, world!"}))

    def test_get_greets_by_the_name_in_the_query(self):
        self.assertEqual(call("GET", query=b"name=Ada"), (200, {"message": "Hello, Ada!"}))

    def test_post_echoes_the_body_back(self):
        self.assertEqual(call("POST", body=b'{"x": 1}'), (200, {"received": {"x": 1}}))

    def test_health_checks_say_ready(self):
        self.assertEqual(new().ready(), (True, "Ready"))


if __name__ == "__main__":
    unittest.main()
