"""The operators' admin and overview page: staff only; actions go through services."""

import pytest
from django.urls import reverse

from functions.models import ApiToken, AuditEvent, Function, FunctionStatus
from tests.support.factories import FunctionFactory, UserFactory

pytestmark = pytest.mark.usefixtures("no_prometheus")


@pytest.fixture
def operator(db):
    return UserFactory(username="ops", is_staff=True, is_superuser=True)


@pytest.fixture
def ops_client(client, operator):
    client.force_login(operator)
    return client


@pytest.mark.parametrize(
    "model", ["project", "membership", "function", "revision", "build", "apitoken", "schedule", "auditevent"]
)
def test_every_admin_list_renders_with_search_and_filters(ops_client, hello, model):
    response = ops_client.get(reverse(f"admin:functions_{model}_changelist"), {"q": "acme"})

    assert response.status_code == 200


def test_project_page_shows_quotas_and_members_inline(ops_client, project, owner):
    html = ops_client.get(reverse("admin:functions_project_change", args=[project.pk])).content.decode()

    assert "Quotas" in html and "max_functions" in html
    assert "memberships-TOTAL_FORMS" in html


def test_force_delete_action_goes_through_the_service(
    ops_client, operator, hello, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = ops_client.post(
            reverse("admin:functions_function_changelist"),
            {"action": "force_delete", "_selected_action": [hello.pk]},
        )

    assert response.status_code == 302
    assert Function.objects.get(pk=hello.pk).status == FunctionStatus.DELETING
    assert AuditEvent.objects.filter(function=hello, action="function.delete", actor=operator).exists()
    assert len(callbacks) == 1  # the backend teardown task


def test_functions_cannot_be_deleted_as_bare_rows(ops_client, hello):
    response = ops_client.get(reverse("admin:functions_function_delete", args=[hello.pk]))

    assert response.status_code == 403
    assert Function.objects.filter(pk=hello.pk).exists()


def test_revoke_action_revokes_tokens(ops_client, owner):
    token, plaintext = ApiToken.issue(user=owner, name="laptop")

    ops_client.post(
        reverse("admin:functions_apitoken_changelist"), {"action": "revoke", "_selected_action": [token.pk]}
    )

    token.refresh_from_db()
    assert token.revoked_at is not None and not token.is_active


def test_audit_log_is_read_only(ops_client, project):
    event = AuditEvent.objects.create(project=project, action="function.deploy")

    response = ops_client.post(reverse("admin:functions_auditevent_change", args=[event.pk]), {"action": "x"})

    assert response.status_code == 403
    event.refresh_from_db()
    assert event.action == "function.deploy"


def test_members_do_not_get_into_the_admin(client, owner):
    client.force_login(owner)

    response = client.get(reverse("admin:functions_function_changelist"))

    assert response.status_code == 302


# Operators' overview ---------------------------------------------------------------------------------


def test_overview_counts_functions_per_project_and_lists_failing_ones(
    ops_client, project, other_project, settings
):
    from tests.support.ports import free_port

    settings.HKS_RUNTIME_URL = f"http://127.0.0.1:{free_port()}"
    FunctionFactory(project=project, name="ok", status="ready")
    FunctionFactory(project=project, name="bad", status="failed", status_message="exit code 3")
    FunctionFactory(project=project, name="gone", status="deleted")
    FunctionFactory(project=other_project, name="agent-1", status="ready", ephemeral=True)

    html = ops_client.get(reverse("operators_overview")).content.decode()

    assert 'id="ops-project-acme"' in html and 'id="ops-project-globex"' in html
    acme_row = html.split('id="ops-project-acme"')[1].split("</tr>")[0]
    assert [cell.split("<")[0] for cell in acme_row.split('class="num">')[1:5]] == ["2", "1", "1", "0"]
    assert "acme/bad" in html and "exit code 3" in html
    assert "Local runtime</strong>: DOWN" in html  # nothing listens there


def test_overview_reports_a_healthy_runtime(ops_client, local_backend_settings):
    html = ops_client.get(reverse("operators_overview")).content.decode()

    assert "Local runtime</strong>: healthy" in html
    assert "Task queue</strong>" in html and " waiting; " in html  # the broker answered LLEN


def test_overview_is_staff_only(client, owner, outsider):
    for user in (owner, outsider):
        client.force_login(user)
        response = client.get(reverse("operators_overview"))
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]
