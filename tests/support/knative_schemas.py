"""Knative Serving's schemas, for the fake API server and the manifest tests - from a package, not a folder.

By default the objects of ``serving.knative.dev/v1`` (Service, Configuration, Revision, Route) are checked
with the PyPI package ``cloudcoil-models-knative-serving`` (pinned in requirements.txt): pydantic models
generated from Knative Serving's own CRD schemas (release 1.17; the 1.23 builds of the package need Python
3.14). They are validated with ``extra="forbid"`` and strict types, so an unknown or misspelled field, or a
string where Knative wants a number, is refused the way ``fieldValidation=Strict`` refuses it.

``HKS_KNATIVE_SCHEMAS=DIR`` checks against the CRD files in DIR instead (``knative-serving-<kind>-crd.yaml``,
their ``openAPIV3Schema`` made strict about unknown fields except where the CRD keeps them), for instance a
newer release's. What the two differ in is in docs/operations.md ("Knative schemas in the tests").
"""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path

import jsonschema
import pydantic
import yaml

KINDS = ("Service", "Configuration", "Revision", "Route")


class KnativeInvalid(ValueError):
    """An object Knative's schema refuses; the message starts with the path of the offending field."""


def source() -> str:
    """Where the schemas come from, for messages: the package and its Knative release, or the folder."""
    folder = os.environ.get("HKS_KNATIVE_SCHEMAS")
    if folder:
        return f"CRD files in {folder}"
    from importlib.metadata import version

    return f"cloudcoil-models-knative-serving {version('cloudcoil-models-knative-serving')}"


def validate(obj: dict) -> None:
    """Raise ``KnativeInvalid`` unless ``obj`` (a ``serving.knative.dev/v1`` object) is valid."""
    kind = obj.get("kind")
    if kind not in KINDS or obj.get("apiVersion") != "serving.knative.dev/v1":
        raise KnativeInvalid(f"(root): no Knative Serving schema for {obj.get('apiVersion')}/{kind}")
    folder = os.environ.get("HKS_KNATIVE_SCHEMAS")
    if folder:
        _validate_with_crd(obj, Path(folder), kind)
    else:
        _validate_with_models(obj, kind)


def _validate_with_models(obj: dict, kind: str) -> None:
    from cloudcoil.models.knative_serving.serving import v1

    try:
        # As JSON, the way the API server gets it: strict types, yet timestamps may be strings.
        getattr(v1, kind).model_validate_json(json.dumps(obj), strict=True, extra="forbid")
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(root)"
        raise KnativeInvalid(f"{where}: {first['msg']} ({exc.error_count()} error(s))") from exc
    except TypeError as exc:  # the models' int-or-string quantities crash on a bare integer (e.g. cpu: 1)
        raise KnativeInvalid(f"(root): the models could not check a value: {exc}") from exc


def _validate_with_crd(obj: dict, folder: Path, kind: str) -> None:
    try:
        jsonschema.validate(obj, crd_schema(folder, kind))
    except jsonschema.ValidationError as exc:
        where = ".".join(str(part) for part in exc.absolute_path) or "(root)"
        raise KnativeInvalid(f"{where}: {exc.message}") from exc


@functools.cache
def crd_schema(folder: Path, kind: str) -> dict:
    path = folder / f"knative-serving-{kind.lower()}-crd.yaml"
    if not path.exists():
        raise FileNotFoundError(f"Knative CRD for {kind} not found at {path} (HKS_KNATIVE_SCHEMAS={folder})")
    crd = yaml.safe_load(path.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))


def _strict(schema):
    """Reject unknown fields the way ``fieldValidation=Strict`` does, except where the CRD keeps them."""
    if isinstance(schema, dict):
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        for value in schema.values():
            _strict(value)
    elif isinstance(schema, list):
        for value in schema:
            _strict(value)
    return schema
