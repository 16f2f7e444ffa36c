"""Operators create agent credentials in the admin; the secret is shown once and only its hash is kept."""

import re

import pytest
from django.contrib.messages import get_messages

from functions.agents.tokens import TokenError, credential_authenticate
from functions.models import AgentCredential, hash_token
from tests.support.factories import UserFactory


@pytest.fixture
def operator_client(client, db):
    client.force_login(UserFactory(username="ops", is_staff=True, is_superuser=True))
    return client


def test_operator_creates_a_credential_and_sees_its_secret_once(operator_client, project):
    response = operator_client.post(
        "/admin/functions/agentcredential/add/", {"project": project.pk, "name": "bot"}
    )
    assert response.status_code == 302
    text = " ".join(str(m) for m in get_messages(response.wsgi_request))
    secret = re.search(r"(hksa_[\w-]+)", text).group(1)
    credential = AgentCredential.objects.get(name="bot")
    assert credential.key_hash == hash_token(secret)
    assert credential_authenticate(secret).project == project


def test_revoked_credential_no_longer_authenticates(operator_client, project):
    credential, secret = AgentCredential.issue(project=project, name="bot")
    operator_client.post(
        "/admin/functions/agentcredential/", {"action": "revoke", "_selected_action": [credential.pk]}
    )
    credential.refresh_from_db()
    assert credential.revoked_at is not None
    with pytest.raises(TokenError):
        credential_authenticate(secret)
