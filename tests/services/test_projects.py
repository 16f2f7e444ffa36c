"""Project cluster credentials: encryption at rest, the kubeconfig service, and source archive links."""

import io
from urllib.parse import urlparse

import pytest
import yaml
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from functions.backends.base import BuildSpec
from functions.crypto import DecryptionError, decrypt_text, encrypt_text
from functions.errors import ServiceError
from functions.models import AuditEvent
from functions.selectors import project_kubeconfig
from functions.services import functions as services
from functions.services.functions import function_ref
from functions.services.projects import project_set_kubeconfig
from functions.sources import archive_links
from functions.sources.archive_links import archive_url_for
from functions.sources.archives import pack_files

KUBECONFIG = yaml.safe_dump(
    {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://vcluster.example.test:6443"}}],
        "users": [{"name": "u", "user": {"token": "s3cret-token"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": "acme"}}],
        "current-context": "ctx",
    }
)


def test_encrypted_text_round_trips_and_hides_the_plaintext():
    token = encrypt_text("s3cret-token")
    assert "s3cret" not in token
    assert decrypt_text(token) == "s3cret-token"


def test_a_configured_key_is_used_and_old_keys_still_decrypt(settings):
    old = Fernet.generate_key().decode()
    settings.HKS_ENCRYPTION_KEY = old
    stored = encrypt_text("kubeconfig")
    settings.HKS_ENCRYPTION_KEY = f"{Fernet.generate_key().decode()},{old}"  # rotated: new first
    assert decrypt_text(stored) == "kubeconfig"
    settings.HKS_ENCRYPTION_KEY = Fernet.generate_key().decode()
    with pytest.raises(DecryptionError):
        decrypt_text(stored)


def test_a_malformed_key_is_a_configuration_error(settings):
    settings.HKS_ENCRYPTION_KEY = "not-a-fernet-key"
    with pytest.raises(ImproperlyConfigured):
        encrypt_text("x")


@pytest.fixture
def bare_knative_project(project):
    project.backend = "knative"
    project.save()
    return project


def test_kubeconfig_is_stored_encrypted_and_audited(bare_knative_project, owner):
    project_set_kubeconfig(project=bare_knative_project, kubeconfig_text=KUBECONFIG, actor=owner)
    bare_knative_project.refresh_from_db()
    assert "s3cret-token" not in bare_knative_project.kubeconfig_encrypted
    assert project_kubeconfig(project=bare_knative_project) == KUBECONFIG
    event = AuditEvent.objects.get(project=bare_knative_project, action="project.kubeconfig")
    assert event.actor == owner
    assert event.detail == {"server": "https://vcluster.example.test:6443"}
    assert "s3cret-token" not in str(event.detail)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("clusters: [oops", "not valid YAML"),
        ("- a\n- b\n", "not a kubeconfig"),
        (KUBECONFIG.replace("current-context: ctx", "current-context: other"), "current-context"),
        (KUBECONFIG.replace("cluster: c\n", "cluster: nowhere\n"), "cluster"),
        (KUBECONFIG.replace("user: u\n", "user: nobody\n"), "user"),
        (KUBECONFIG.replace("https://vcluster.example.test:6443", "vcluster"), "server URL"),
        ("x" * 300_000, "larger than"),
    ],
)
def test_a_bad_kubeconfig_is_refused_and_changes_nothing(bare_knative_project, owner, text, reason):
    with pytest.raises(ServiceError, match=reason):
        project_set_kubeconfig(project=bare_knative_project, kubeconfig_text=text, actor=owner)
    bare_knative_project.refresh_from_db()
    assert bare_knative_project.kubeconfig_encrypted == ""
    assert not AuditEvent.objects.filter(action="project.kubeconfig").exists()


def test_the_kubeconfig_namespace_becomes_the_project_namespace(bare_knative_project, owner):
    project_set_kubeconfig(
        project=bare_knative_project,
        kubeconfig_text=KUBECONFIG.replace("namespace: acme", "namespace: team-acme"),
        actor=owner,
    )
    bare_knative_project.refresh_from_db()
    assert bare_knative_project.effective_namespace == "team-acme"


def test_a_local_project_takes_no_kubeconfig(project, owner):
    with pytest.raises(ServiceError, match="local backend"):
        project_set_kubeconfig(project=project, kubeconfig_text=KUBECONFIG, actor=owner)
    project.refresh_from_db()
    assert project.kubeconfig_encrypted == ""


NODE_SOURCE = {
    "func.yaml": b"specVersion: 0.36.0\nname: hello\nruntime: node\ncreated: 2026-11-25T00:00:00Z\n",
    "index.js": b"module.exports = { handle: async () => 'OK' };\n",
}


@pytest.fixture
def revision(project, owner):
    function = services.function_create(project=project, name="hello", runtime="node", user=owner)
    return services.function_deploy(function=function, archive=pack_files(NODE_SOURCE), user=owner)


def link_for(revision) -> str:
    spec = BuildSpec(
        ref=function_ref(revision.function),
        revision=revision.name,
        runtime="node",
        archive_path=revision.archive.path,
        content_hash=revision.content_hash,
    )
    return urlparse(archive_url_for(spec)).path


def test_an_archive_link_serves_the_source_as_often_as_a_build_may_fetch_it(client, revision):
    path = link_for(revision)
    for _ in range(archive_links.USES):  # the fetch, and curl's retries after a broken transfer
        response = client.get(path)
        assert response.status_code == 200
        assert b"".join(response.streaming_content) == revision.archive.open("rb").read()
    assert client.get(path).status_code == 404


def test_a_tampered_archive_link_is_refused(client, revision):
    path = link_for(revision)
    token = path.rstrip("/").rsplit("/", 1)[1]
    assert client.get(path.replace(token, token[:-2] + "xx")).status_code == 404


def test_the_set_kubeconfig_command_switches_a_project_to_knative(project, tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    call_command("set_kubeconfig", "acme", str(path), stdout=io.StringIO())
    project.refresh_from_db()
    assert project.backend == "knative"
    assert project_kubeconfig(project=project) == KUBECONFIG


def test_the_set_kubeconfig_command_refuses_a_bad_file_and_changes_nothing(project, tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text("not: a kubeconfig")
    with pytest.raises(CommandError, match="clusters"):
        call_command("set_kubeconfig", "acme", str(path))
    project.refresh_from_db()
    assert project.backend == "local"
    assert project.kubeconfig_encrypted == ""
