"""How ``hks login`` gets a token: the device flow (start, then poll while a person approves the code in
the portal) and the user name/password exchange. These endpoints are the only unauthenticated ones."""

from django.http import JsonResponse
from django.urls import reverse
from ninja import Router
from ninja.throttling import AnonRateThrottle

from functions.api.schemas import LoginPollIn, LoginStartIn, PasswordIn
from functions.auth import cli_login
from functions.errors import ServiceError

router = Router(tags=["cli login"])


def _error(exc: ServiceError, **extra) -> JsonResponse:
    return JsonResponse({"detail": exc.message, **extra}, status=exc.code)


@router.post("/cli/login/start", auth=None, throttle=[AnonRateThrottle("30/m")])
def login_start(request, payload: LoginStartIn | None = None):
    started = cli_login.cli_login_start(client_name=payload.client_name if payload else "")
    url = request.build_absolute_uri(reverse("cli_approve"))
    return {
        "device_code": started.device_code,
        "user_code": started.request.user_code,
        "verification_url": url,
        "verification_url_complete": f"{url}?code={started.request.user_code}",
        "interval": cli_login.POLL_INTERVAL_SECONDS,
        "expires_in": int(cli_login.LOGIN_TTL.total_seconds()),
    }


@router.post("/cli/login/poll", auth=None)
def login_poll(request, payload: LoginPollIn):
    try:
        token = cli_login.cli_login_redeem(device_code=payload.device_code)
    except cli_login.LoginPending:
        # 428 like RFC 8628's authorization_pending: keep polling at the given interval.
        return JsonResponse({"status": "pending", "detail": "waiting for approval in the portal"}, status=428)
    except ServiceError as exc:
        return _error(exc, status="expired" if exc.code == 410 else "error")
    return {"status": "approved", "token": token}


@router.post("/auth/token", auth=None, throttle=[AnonRateThrottle("120/m")])  # guessing: cli_login
def password_token(request, payload: PasswordIn):
    try:
        token = cli_login.token_for_password(
            username=payload.username,
            password=payload.password,
            client_name=payload.client_name,
            request=request,
        )
    except ServiceError as exc:
        return _error(exc)
    return {"token": token}
