"""API test fixtures: archives go to a temporary MEDIA_ROOT, and a few objects to act on."""

from pathlib import Path

import pytest

from functions.models import Build, BuildStatus, Revision
from tests.support.archive_samples import node_archive
from tests.support.factories import FunctionFactory


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # Personas get hashed passwords; PBKDF2's deliberate slowness only slows the suite here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = root
    return root


@pytest.fixture
def media_files(media_root):
    """Every file under MEDIA_ROOT (what an upload may have left behind)."""
    return lambda: sorted(p.relative_to(media_root) for p in media_root.rglob("*") if p.is_file())


@pytest.fixture
def hello(project):
    return FunctionFactory(project=project, name="hello", runtime="node")


@pytest.fixture
def built_revision(hello):
    """Revision 1 of ``hello``, built and serving (what a finished deploy leaves)."""
    from django.core.files.base import ContentFile

    revision = Revision(
        function=hello,
        number=1,
        content_hash="a" * 64,
        config={"runtime": "node"},
        artifact="/artifacts/hello-00001",
    )
    revision.archive.save("acme-hello-1.tar.gz", ContentFile(node_archive()), save=False)
    revision.save()
    Build.objects.create(revision=revision, status=BuildStatus.SUCCEEDED, log="step 1\nstep 2\n")
    hello.current_revision = revision
    hello.status = "ready"
    hello.save()
    return revision
