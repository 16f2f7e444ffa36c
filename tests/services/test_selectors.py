import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404

from functions import selectors
from functions.models import Role
from tests.support.factories import FunctionFactory


def test_outsider_cannot_see_a_project_it_is_not_in(project, outsider):
    with pytest.raises(Http404):
        selectors.project_get_for_user(user=outsider, slug=project.slug)


def test_outsider_gets_404_for_a_function_of_another_project(project, outsider):
    FunctionFactory(project=project, name="hello")
    with pytest.raises(Http404):
        selectors.function_get_for_user(user=outsider, project_slug=project.slug, name="hello")


def test_viewer_is_refused_a_developer_action(project, viewer):
    FunctionFactory(project=project, name="hello")
    with pytest.raises(PermissionDenied):
        selectors.function_get_for_user(
            user=viewer, project_slug=project.slug, name="hello", role=Role.DEVELOPER
        )


def test_member_lists_only_live_functions_of_its_project(project, other_project, developer):
    FunctionFactory(project=project, name="alive")
    FunctionFactory(project=project, name="gone", status="deleted")
    FunctionFactory(project=other_project, name="theirs")
    names = [f.name for f in selectors.functions_for_user(user=developer, project_slug="acme")]
    assert names == ["alive"]
