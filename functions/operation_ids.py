"""OpenAPI operation ids that outlive the modules they were named after.

django-ninja names an operation ``<module>_<function>``; generated clients call it by that id, so the ids
stay as they were before functions/ was split into packages (issue 14)."""

from ninja import NinjaAPI

FORMER_MODULES = {
    "functions.api.logs": "functions.api.invoke",
    "functions.agents.api": "functions.internal_api",
    "functions.agents.internal_sessions": "functions.internal_sessions",
}


class StableIdsAPI(NinjaAPI):
    def get_openapi_operation_id(self, operation) -> str:
        module = operation.view_func.__module__
        return f"{FORMER_MODULES.get(module, module)}_{operation.view_func.__name__}".replace(".", "_")
