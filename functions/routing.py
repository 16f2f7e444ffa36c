from django.urls import path

from functions.realtime import consumers

websocket_urlpatterns: list = [
    path("ws/p/<slug:project>/f/<slug:name>/logs/", consumers.LogConsumer.as_asgi()),
    path("ws/p/<slug:project>/functions/", consumers.FunctionStatusConsumer.as_asgi()),
]
