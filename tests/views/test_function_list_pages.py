"""The function list a page at a time: search, status filter, sort and page in the URL, how many functions
each status filter keeps, the htmx poll of a page, and who may see it (an outsider gets 404 for every page,
an operator reads)."""

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from functions.models import Function
from functions.realtime.push import render_row_oob
from functions.views.listing import PAGE_SIZE
from tests.support.factories import UserFactory

pytestmark = pytest.mark.usefixtures("no_prometheus")

HX = {"HTTP_HX_REQUEST": "true"}
LIST = "/p/acme/"
ROW_NAME = re.compile(r'<tr id="function-\d+"[^>]*>\s*<td class="name-cell"><a href="[^"]*">([^<]+)</a>')


def _bulk(project, prefix: str, count: int, **fields) -> None:
    defaults = {"status": "ready", "replicas": 1} | fields
    Function.objects.bulk_create(
        Function(project=project, name=f"{prefix}-{i:04d}", **defaults) for i in range(count)
    )


def _names(html: str) -> list[str]:
    return ROW_NAME.findall(html)


def _link(html: str, element_id: str) -> dict[str, list[str]] | None:
    """The query of the link with ``element_id``, or None when the page has no such link."""
    found = re.search(rf'<a id="{element_id}"[^>]* href="([^"]*)"', html)
    return parse_qs(urlsplit(found.group(1).replace("&amp;", "&")).query) if found else None


def test_a_page_shows_fifty_functions_and_says_where_it_is(client_for, owner, project):
    _bulk(project, "fn", 120)

    html = client_for(owner).get(LIST).content.decode()

    assert PAGE_SIZE == 50
    assert _names(html) == [f"fn-{i:04d}" for i in range(50)]
    assert "1–50 of 120" in html and "Page 1 of 3" in html
    assert _link(html, "page-next") == {"page": ["2"]}
    assert _link(html, "page-last") == {"page": ["3"]}
    assert _link(html, "page-previous") is None


def test_the_next_page_continues_in_the_same_search_and_order(client_for, owner, project):
    _bulk(project, "fn", 120)
    _bulk(project, "other", 5)

    html = client_for(owner).get(LIST, {"q": "fn-", "sort": "-name", "page": "2"}).content.decode()

    assert _names(html) == [f"fn-{i:04d}" for i in range(69, 19, -1)]
    assert "51–100 of 120" in html
    assert _link(html, "page-next") == {"q": ["fn-"], "sort": ["-name"], "page": ["3"]}
    assert _link(html, "page-previous") == {"q": ["fn-"], "sort": ["-name"], "page": ["1"]}
    assert _link(html, "page-first") == {"q": ["fn-"], "sort": ["-name"]}


def test_the_last_page_has_the_rest_and_no_next_link(client_for, owner, project):
    _bulk(project, "fn", 120)

    html = client_for(owner).get(LIST, {"page": "3"}).content.decode()

    assert _names(html) == [f"fn-{i:04d}" for i in range(100, 120)]
    assert "101–120 of 120" in html
    assert _link(html, "page-next") is None and _link(html, "page-last") is None


@pytest.mark.parametrize(("asked", "shown"), [("9", "3"), ("0", "1"), ("two", "1"), ("-1", "1")])
def test_a_page_that_does_not_exist_shows_the_nearest_one(client_for, owner, project, asked, shown):
    _bulk(project, "fn", 120)

    html = client_for(owner).get(LIST, {"page": asked}).content.decode()

    assert f"Page {shown} of 3" in html


def test_a_project_that_fits_on_one_page_has_no_pager(client_for, owner, project):
    _bulk(project, "fn", PAGE_SIZE)

    html = client_for(owner).get(LIST).content.decode()

    assert len(_names(html)) == PAGE_SIZE
    assert 'id="function-pager"' not in html


def test_status_counts_count_the_searched_functions_and_link_to_their_filter(client_for, owner, project):
    _bulk(project, "api", 60)
    _bulk(project, "api-idle", 3, replicas=0)
    _bulk(project, "api-broken", 5, status="failed", status_message="boom")
    _bulk(project, "web", 10, status="failed")
    _bulk(project, "api-gone", 4, status="deleted")

    html = client_for(owner).get(LIST, {"q": "api", "page": "2"}).content.decode()
    counts = re.search(r'<nav class="status-counts".*?</nav>', html, re.S).group(0)

    assert re.findall(r">([^<>]+) <span class=\"count\">(\d+)</span>", counts) == [
        ("All", "68"),
        ("Ready", "60"),
        ("Scaled to zero", "3"),
        ("Failed", "5"),
    ]
    assert 'href="?q=api&amp;status=failed">Failed' in counts  # the search kept, back to the first page
    assert 'href="?q=api" class="current" aria-current="true">All' in counts


def test_a_status_filter_pages_through_its_own_functions(client_for, owner, project):
    _bulk(project, "broken", 70, status="failed", status_message="boom")
    _bulk(project, "fine", 40)

    html = client_for(owner).get(LIST, {"status": "failed", "page": "2"}).content.decode()

    assert _names(html) == [f"broken-{i:04d}" for i in range(50, 70)]
    assert "51–70 of 70" in html
    assert 'class="current" aria-current="true">Failed <span class="count">70</span>' in html


def test_a_filter_that_keeps_nothing_still_shows_the_counts(client_for, owner, project):
    _bulk(project, "fn", 3)

    html = client_for(owner).get(LIST, {"status": "building"}).content.decode()

    assert 'id="no-match"' in html
    assert 'aria-current="true">Building <span class="count">0</span>' in html
    assert "All <span" in html and "Ready <span" in html


def test_sorting_from_a_later_page_starts_at_the_first(client_for, owner, project):
    _bulk(project, "fn", 120)

    html = client_for(owner).get(LIST, {"q": "fn", "page": "2"}).content.decode()

    assert '<a href="?q=fn&amp;sort=-name">Name</a>' in html


def test_the_poll_of_a_page_renders_that_page_and_polls_it_again(client_for, owner, project):
    _bulk(project, "fn", 120)

    html = client_for(owner).get(LIST, {"page": "2", "sort": "-name"}, **HX).content.decode()

    assert html.startswith(f'<div id="function-rows" hx-get="{LIST}?page=2&amp;sort=-name"')
    assert "<html" not in html
    assert _names(html)[0] == "fn-0069"


def test_a_pushed_row_has_the_id_of_its_row_on_a_later_page(client_for, owner, project):
    """static/hks.js swaps a pushed row into the row with its id, and drops it when the page has none."""
    _bulk(project, "fn", 120)
    on_page_two = Function.objects.select_related("project").get(name="fn-0075")
    client = client_for(owner)

    page_two = client.get(LIST, {"page": "2"}).content.decode()
    page_one = client.get(LIST).content.decode()
    pushed = render_row_oob(on_page_two)

    assert pushed.startswith(f'<tr id="function-{on_page_two.pk}" hx-swap-oob="true"')
    assert f'<tr id="function-{on_page_two.pk}"' in page_two
    assert f'id="function-{on_page_two.pk}"' not in page_one


def test_every_page_filter_and_search_costs_the_same_queries(client_for, owner, project):
    _bulk(project, "fn", 300)
    _bulk(project, "broken", 80, status="failed")
    client = client_for(owner)
    client.get(LIST)  # warm the session

    def queries(params):
        with CaptureQueriesContext(connection) as captured:
            assert client.get(LIST, params).status_code == 200
        return len(captured.captured_queries)

    asked = [{}, {"page": "6"}, {"q": "fn-02", "page": "2"}, {"status": "failed", "page": "2"}]
    assert len({queries(params) for params in asked}) == 1


def test_an_outsider_gets_404_for_every_page_search_and_poll(client_for, outsider, project):
    _bulk(project, "fn", 120)
    client = client_for(outsider)

    for params in ({"page": "2"}, {"q": "fn", "status": "ready", "page": "3"}, {"sort": "-name"}):
        assert client.get(LIST, params).status_code == 404
        assert client.get(LIST, params, **HX).status_code == 404


def test_an_operator_reads_any_page(client_for, project):
    _bulk(project, "fn", 120)
    operator = UserFactory(username="ops", is_staff=True)

    html = client_for(operator).get(LIST, {"page": "3", "q": "fn"}).content.decode()

    assert _names(html) == [f"fn-{i:04d}" for i in range(100, 120)]
