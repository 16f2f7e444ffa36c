"""A revision that crashes at start fails the deploy with the function's own error, without waiting out the
deploy timeout or retrying (the runtime reports the revision failed). Debian package: bubblewrap."""

import pytest

from functions.models import Function, FunctionStatus
from tests.support.archive_samples import node_archive
from tests.support.daemon_helpers import wait_until

pytestmark = [pytest.mark.runtime, pytest.mark.usefixtures("local_backend_settings")]

CRASHES_AT_LOAD = b"throw new Error('boom while loading the module');\n"


def test_a_function_that_crashes_at_start_is_failed_with_its_error(
    celery_worker, project, developer, api_client_for, media_root
):
    client = api_client_for(developer)
    uploaded = client.post(
        "/api/v1/projects/acme/functions/crashy/revisions?create=true&runtime=node",
        node_archive("crashy", body=CRASHES_AT_LOAD),
        content_type="application/gzip",
    )
    assert uploaded.status_code == 201, uploaded.json()
    # Well inside the 120 s a deploy waits for readiness: a failed revision must not be waited out.
    function = wait_until(
        lambda: (f := Function.objects.get(name="crashy")).status == FunctionStatus.FAILED and f,
        90,
        "failure",
    )
    assert "boom while loading the module" in function.status_message
    assert function.current_revision is None
