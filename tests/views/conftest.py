# The dashboard's fixtures: a signed-in browser-like client, a ready function, no Prometheus.
from tests.support.dashboard import client_for, fake_k8s, fake_k8s_server, hello, no_prometheus  # noqa: F401
