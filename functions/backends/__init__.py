"""A lazy registry of backends by dotted path, so ``kubernetes`` is imported only when used."""

from functools import cache

from django.utils.module_loading import import_string

from functions.backends.base import BackendError, FunctionBackend, FunctionRef

BACKENDS = {
    "local": "functions.backends.local.LocalBackend",
    "knative": "functions.backends.knative.KnativeBackend",
}


@cache
def _backend_class(name: str) -> type[FunctionBackend]:
    try:
        return import_string(BACKENDS[name])
    except KeyError as exc:
        raise BackendError(f"unknown backend {name!r}", permanent=True) from exc


def get_backend(project) -> FunctionBackend:
    """The backend instance serving ``project`` (a ``functions.models.Project``)."""
    return _backend_class(project.backend).for_project(project)


def function_ref(function) -> FunctionRef:
    """How a backend names ``function`` (a ``functions.models.Function``): project, namespace, name."""
    project = function.project
    return FunctionRef(project=project.slug, namespace=project.effective_namespace, function=function.name)


__all__ = ["BACKENDS", "BackendError", "FunctionBackend", "FunctionRef", "function_ref", "get_backend"]
