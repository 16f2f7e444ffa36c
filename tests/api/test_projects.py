"""Projects, members, the kubeconfig and the audit log through the API."""

import pytest

from functions.models import AuditEvent, Membership, Role


def test_projects_lists_mine_with_my_role(project, other_project, viewer, api_client_for):
    response = api_client_for(viewer).get("/api/v1/projects")
    assert response.status_code == 200
    assert [(p["slug"], p["role"]) for p in response.json()] == [("acme", "viewer")]


def test_project_detail_shows_backend_and_quotas(project, developer, api_client_for):
    body = api_client_for(developer).get("/api/v1/projects/acme").json()
    assert body["backend"] == "local" and body["role"] == "developer"
    assert body["max_functions"] == project.max_functions


def test_owner_lists_members(project, owner, developer, api_client_for):
    body = api_client_for(owner).get("/api/v1/projects/acme/members").json()
    assert {(m["username"], m["role"]) for m in body} == {
        ("olivia-owner", "owner"),
        ("dev-dana", "developer"),
    }


@pytest.mark.parametrize("persona", ["developer", "viewer"])
def test_only_owners_see_members(persona, project, owner, request, api_client_for):
    response = api_client_for(request.getfixturevalue(persona)).get("/api/v1/projects/acme/members")
    assert response.status_code == 403
    assert "owner" in response.json()["detail"]


def test_owner_changes_a_members_role(project, owner, developer, api_client_for):
    changed = api_client_for(owner).put(
        "/api/v1/projects/acme/members/dev-dana", {"role": "viewer"}, content_type="application/json"
    )
    assert changed.status_code == 200 and changed.json()["role"] == "viewer"
    assert Membership.objects.get(project=project, user=developer).role == Role.VIEWER
    assert AuditEvent.objects.filter(project=project, action="member.set").count() == 1


def test_a_bad_role_is_refused(project, owner, developer, api_client_for):
    response = api_client_for(owner).put(
        "/api/v1/projects/acme/members/dev-dana", {"role": "god"}, content_type="application/json"
    )
    assert response.status_code == 422
    assert Membership.objects.get(user=developer).role == Role.DEVELOPER


def test_developer_cannot_promote_itself(project, developer, api_client_for):
    response = api_client_for(developer).put(
        "/api/v1/projects/acme/members/dev-dana", {"role": "owner"}, content_type="application/json"
    )
    assert response.status_code == 403
    assert Membership.objects.get(user=developer).role == Role.DEVELOPER


def test_owner_removes_a_member(project, owner, developer, api_client_for):
    response = api_client_for(owner).delete("/api/v1/projects/acme/members/dev-dana")
    assert response.status_code == 204
    assert not Membership.objects.filter(user=developer).exists()


@pytest.mark.parametrize("how", ["remove", "demote"])
def test_the_last_owner_cannot_leave(how, project, owner, api_client_for):
    client = api_client_for(owner)
    if how == "remove":
        response = client.delete("/api/v1/projects/acme/members/olivia-owner")
    else:
        response = client.put(
            "/api/v1/projects/acme/members/olivia-owner", {"role": "viewer"}, content_type="application/json"
        )
    assert response.status_code == 409
    assert response.json() == {"detail": "a project needs at least one owner"}
    assert Membership.objects.get(user=owner).role == Role.OWNER


def test_kubeconfig_of_a_local_project_is_404_with_the_reason(project, developer, api_client_for):
    response = api_client_for(developer).get("/api/v1/projects/acme/kubeconfig")
    assert response.status_code == 404
    assert "local runtime" in response.json()["detail"]


def test_viewer_may_not_read_the_kubeconfig(project, viewer, api_client_for):
    project.backend = "knative"
    project.save()
    assert api_client_for(viewer).get("/api/v1/projects/acme/kubeconfig").status_code == 403


def test_audit_shows_what_happened_in_my_project_only(
    project, other_project, owner, outsider, api_client_for
):
    AuditEvent.objects.create(project=project, actor=owner, action="function.create", function_name="hello")
    AuditEvent.objects.create(project=other_project, actor=outsider, action="function.create")
    body = api_client_for(owner).get("/api/v1/audit").json()
    assert [(e["project"], e["action"], e["actor"]) for e in body] == [
        ("acme", "function.create", "olivia-owner")
    ]
    assert api_client_for(owner).get("/api/v1/audit?project=acme").json() == body


def test_audit_is_for_owners(project, developer, api_client_for):
    assert api_client_for(developer).get("/api/v1/audit?project=acme").status_code == 403


def test_no_token_is_401(project, client):
    response = client.get("/api/v1/projects")
    assert response.status_code == 401
    assert "detail" in response.json()


def test_owner_reads_one_member(project, owner, developer, api_client_for):
    client = api_client_for(owner)
    assert client.get("/api/v1/projects/acme/members/dev-dana").json()["role"] == "developer"
    missing = client.get("/api/v1/projects/acme/members/nobody")
    assert missing.status_code == 404 and "not a member" in missing.json()["detail"]


def test_removing_someone_who_is_not_a_member_is_404(project, owner, outsider, api_client_for):
    response = api_client_for(owner).delete("/api/v1/projects/acme/members/oscar-outsider")
    assert response.status_code == 404
    assert outsider.memberships.count() == 1
