"""The JSON API under /api/v1 (OpenAPI document at /api/v1/openapi.json, docs at /api/v1/docs)."""

from ninja import NinjaAPI

from .auth import SessionAuth, TokenAuth

api = NinjaAPI(
    title="HKS Functions API",
    version="1",
    auth=[TokenAuth(), SessionAuth()],
    urls_namespace="api",
)


@api.get("/whoami", tags=["account"])
def whoami(request):
    user = request.auth
    return {"username": user.username, "email": user.email}
