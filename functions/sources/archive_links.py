"""Short-lived, few-use links a cluster's build Job uses to fetch a revision's source archive.

The link carries a signed token naming the revision and its content hash (``django.core.signing``, salted,
with a maximum age); the download view serves each token at most ``USES`` times (counted in Redis) - the
build's fetch and curl's own retries after a broken transfer - and only while the revision still exists
with that content. The download view itself is ``functions.views.archives``.
"""

from __future__ import annotations

import hashlib

import redis
from django.conf import settings
from django.core import signing
from django.http import Http404
from django.urls import reverse

from functions.backends.base import BuildSpec
from functions.models import Revision

SALT = "hks.archive-link"
USES = 4  # the build's curl: one fetch and up to 3 retries (k8s_manifests.build_job)


def archive_url_for(spec: BuildSpec) -> str:
    token = signing.dumps(
        {"p": spec.ref.project, "f": spec.ref.function, "r": spec.revision, "h": spec.content_hash}, salt=SALT
    )
    path = reverse("archive_download", kwargs={"token": token})
    return settings.HKS_PUBLIC_URL.rstrip("/") + path


def revision_for_token(token: str) -> Revision:
    """The revision a valid, unused token names; ``Http404`` for anything else (no detail for strangers)."""
    try:
        claims = signing.loads(token, salt=SALT, max_age=settings.HKS_BUILD_TIMEOUT_SECONDS + 600)
    except signing.BadSignature as exc:  # includes SignatureExpired
        raise Http404("No such archive.") from exc
    revision = (
        Revision.objects.select_related("function__project")
        .filter(function__project__slug=claims["p"], function__name=claims["f"], content_hash=claims["h"])
        .exclude(function__status="deleted")
        .order_by("-number")
        .first()
    )
    if revision is None or revision.name != claims["r"]:
        raise Http404("No such archive.")
    if not _use(token):
        raise Http404("No such archive.")  # fetched as often as a build may
    return revision


def _use(token: str) -> bool:
    """Count a use of the token, on the shared Redis so that every portal process agrees."""
    key = "hks:archive-link:" + hashlib.sha256(token.encode()).hexdigest()
    with redis.Redis.from_url(settings.REDIS_URL) as connection, connection.pipeline() as pipe:
        pipe.set(key, 0, nx=True, ex=settings.HKS_BUILD_TIMEOUT_SECONDS + 600)
        pipe.incr(key)
        _, uses = pipe.execute()
    return uses <= USES
