import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hks_portal.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from functions.agents.e2b_data_plane import SandboxDataPlane, body_limit  # noqa: E402
from functions.routing import websocket_urlpatterns  # noqa: E402

from .limits import HeaderLimits  # noqa: E402

router = ProtocolTypeRouter(
    {
        "http": SandboxDataPlane(django_asgi_app),  # sessions' sandbox traffic skips Django
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
application = HeaderLimits(router, body_limit=body_limit)
