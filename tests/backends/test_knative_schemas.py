"""Knative Services are checked against Knative's real schema, got from a pinned package: a misspelled field,
a wrong type or an unknown kind is refused; HKS_KNATIVE_SCHEMAS still points the check at CRD files."""

import copy
import textwrap

import pytest

from functions.backends import k8s_manifests as m
from tests.support import knative_schemas
from tests.support.k8s_fake import ManifestInvalid, validate_manifest

from .test_k8s_manifests import CLUSTER, service_spec


@pytest.fixture
def packaged(monkeypatch):
    """The default: the schemas of the pinned package, nothing read from beside the checkout."""
    monkeypatch.delenv("HKS_KNATIVE_SCHEMAS", raising=False)


def ksvc() -> dict:
    return copy.deepcopy(m.knative_service(service_spec(), CLUSTER))


def test_the_default_schemas_come_from_the_pinned_package(packaged):
    assert knative_schemas.source() == "cloudcoil-models-knative-serving 1.17.0.1"
    validate_manifest(ksvc())


@pytest.mark.parametrize(
    ("path", "misspelled"),
    [
        (["spec", "template", "spec"], "containerConcurency"),
        (["spec", "template", "spec", "containers", 0], "imagePullPolcy"),
        (["spec", "template", "spec", "containers", 0, "securityContext"], "runAsNonroot"),
        (["spec", "template"], "metdata"),
        (["spec"], "trafic"),
    ],
)
def test_a_knative_service_with_a_misspelled_field_is_refused(packaged, path, misspelled):
    manifest = ksvc()
    target = manifest
    for key in path:
        target = target[key]
    target[misspelled] = True
    with pytest.raises(ManifestInvalid, match=misspelled):
        validate_manifest(manifest)
    with pytest.raises(knative_schemas.KnativeInvalid, match="Extra inputs are not permitted"):
        knative_schemas.validate(manifest)


def test_a_number_written_as_a_string_is_refused(packaged):
    manifest = ksvc()
    manifest["spec"]["template"]["spec"]["timeoutSeconds"] = "60"
    with pytest.raises(ManifestInvalid, match="timeoutSeconds"):
        validate_manifest(manifest)


def test_a_kind_knative_serving_does_not_have_is_refused(packaged):
    manifest = {**ksvc(), "kind": "Servce"}
    with pytest.raises(ManifestInvalid, match="no Knative Serving schema"):
        validate_manifest(manifest)


CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: services.serving.knative.dev}
spec:
  versions:
  - name: v1
    schema:
      openAPIV3Schema:
        type: object
        properties:
          apiVersion: {type: string}
          kind: {type: string}
          metadata: {type: object}
          spec:
            type: object
            properties:
              template:
                type: object
                x-kubernetes-preserve-unknown-fields: true
              traffic:
                type: array
                items: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


def test_hks_knative_schemas_points_the_check_at_crd_files(monkeypatch, tmp_path):
    (tmp_path / "knative-serving-service-crd.yaml").write_text(textwrap.dedent(CRD))
    monkeypatch.setenv("HKS_KNATIVE_SCHEMAS", str(tmp_path))
    assert knative_schemas.source() == f"CRD files in {tmp_path}"
    manifest = ksvc()
    manifest["spec"]["template"]["anything"] = "kept open by this CRD"
    validate_manifest(manifest)
    manifest["spec"]["trafic"] = []
    with pytest.raises(ManifestInvalid, match="trafic"):
        validate_manifest(manifest)


def test_a_missing_crd_file_names_the_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HKS_KNATIVE_SCHEMAS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="HKS_KNATIVE_SCHEMAS"):
        knative_schemas.validate(ksvc())
