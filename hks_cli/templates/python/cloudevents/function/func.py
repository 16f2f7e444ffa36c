"""__NAME__: a CloudEvents function (served by func-python, which decodes the event for you)."""

import logging

from cloudevents.core.v1.event import CloudEvent


def new():
    """The platform calls this once per instance and sends every event to the returned object."""
    return Function()


class Function:
    async def handle(self, scope, receive, send):
        """``scope["event"]`` is the incoming CloudEvent; sending a CloudEvent answers with it."""
        event = scope["event"]
        print(f"__NAME__ received {event.get_type()} {event.get_id()} from {event.get_source()}", flush=True)
        response = CloudEvent(
            attributes={
                "type": "com.example.__NAME__.response",
                "source": "__NAME__",
                "id": f"response-{event.get_id()}",
            },
            data={"received": {"type": event.get_type(), "data": event.get_data()}},
        )
        await send(response)

    def start(self, cfg):
        logging.info("__NAME__ starting")

    def stop(self):
        logging.info("__NAME__ stopping")

    def alive(self):
        return True, "Alive"

    def ready(self):
        return True, "Ready"
