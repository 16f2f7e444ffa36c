import pytest
from django.test import override_settings

from functions.models import AgentCredential


@pytest.fixture(autouse=True)
def _media_and_keys(tmp_path):
    with override_settings(
        MEDIA_ROOT=tmp_path / "media", HKS_INTERNAL_JWT_KEY_FILE=str(tmp_path / "jwt.pem")
    ):
        yield


@pytest.fixture
def agent_credential(project):
    return AgentCredential.issue(project=project, name="agent")


@pytest.fixture
def outsider_credential(other_project):
    return AgentCredential.issue(project=other_project, name="their-agent")
