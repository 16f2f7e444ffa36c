"""Joining a project takes the joiner's consent: an owner invites a user name, the user accepts. The owner's
answers are the same for names with and without an account, so they cannot be used to find accounts."""

import json

import pytest

from functions.models import AuditEvent, Invitation, Membership, Role
from tests.support.factories import UserFactory


def _invite(client, username, role="viewer"):
    return client.put(
        f"/api/v1/projects/acme/members/{username}", {"role": role}, content_type="application/json"
    )


def _shape(response) -> tuple:
    body = response.json()
    return response.status_code, sorted(body), body["status"], body["role"]


def test_adding_a_user_invites_them_and_adds_nothing_until_they_accept(project, owner, api_client_for):
    newbie = UserFactory(username="newbie")
    invited = _invite(api_client_for(owner), "newbie")
    assert invited.status_code == 202 and invited.json()["status"] == "invited"
    assert not Membership.objects.filter(project=project, user=newbie).exists()
    assert api_client_for(newbie).get("/api/v1/projects/acme").status_code == 404  # not a member yet

    mine = api_client_for(newbie).get("/api/v1/invitations").json()
    assert [(i["project"], i["role"], i["invited_by"]) for i in mine] == [("acme", "viewer", "olivia-owner")]
    accepted = api_client_for(newbie).post("/api/v1/invitations/acme/accept")
    assert accepted.status_code == 200 and accepted.json()["role"] == "viewer"
    assert Membership.objects.get(project=project, user=newbie).role == Role.VIEWER
    assert not Invitation.objects.exists()
    actions = set(AuditEvent.objects.filter(project=project).values_list("action", flat=True))
    assert {"member.invite", "member.accept"} <= actions


def test_unknown_and_existing_user_names_get_the_same_answer(project, owner, api_client_for):
    UserFactory(username="exists")
    client = api_client_for(owner)
    existing, unknown = _invite(client, "exists"), _invite(client, "nobody-here")
    assert _shape(existing) == _shape(unknown)
    assert existing.json()["username"] == "exists" and unknown.json()["username"] == "nobody-here"
    pending = client.get("/api/v1/projects/acme/invitations").json()
    assert sorted(i["username"] for i in pending) == ["exists", "nobody-here"]
    assert project.memberships.count() == 1  # the owner only
    gone_a = client.delete("/api/v1/projects/acme/invitations/exists")
    gone_b = client.delete("/api/v1/projects/acme/invitations/never-invited")
    assert gone_a.status_code == gone_b.status_code == 204


def test_a_user_can_decline_and_only_accept_their_own_invitation(project, owner, outsider, api_client_for):
    newbie = UserFactory(username="newbie")
    _invite(api_client_for(owner), "newbie", role="owner")
    stolen = api_client_for(outsider).post("/api/v1/invitations/acme/accept")
    assert stolen.status_code == 404
    assert not Membership.objects.filter(project=project, user=outsider).exists()
    assert api_client_for(newbie).post("/api/v1/invitations/acme/decline").status_code == 204
    assert api_client_for(newbie).post("/api/v1/invitations/acme/accept").status_code == 404
    assert not Membership.objects.filter(project=project, user=newbie).exists()


@pytest.mark.parametrize("persona", ["developer", "viewer"])
def test_only_owners_invite(persona, project, owner, request, api_client_for):
    UserFactory(username="newbie")
    response = _invite(api_client_for(request.getfixturevalue(persona)), "newbie")
    assert response.status_code == 403
    assert not Invitation.objects.exists()


def test_an_operator_adds_an_existing_user_at_once(project, owner, api_client_for):
    owner.is_staff = True
    owner.save()
    newbie = UserFactory(username="newbie")
    added = _invite(api_client_for(owner), "newbie", role="developer")
    assert added.status_code == 200 and added.json()["role"] == "developer"
    assert Membership.objects.get(project=project, user=newbie).role == Role.DEVELOPER


def test_a_malformed_user_name_is_refused_and_changes_nothing(project, owner, api_client_for):
    response = api_client_for(owner).put(
        "/api/v1/projects/acme/members/bad%20name%21", json.dumps({"role": "viewer"}), "application/json"
    )
    assert response.status_code == 400
    assert not Invitation.objects.exists()
