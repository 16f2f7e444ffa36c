# One image for the portal, the Celery worker and Celery beat; the Deployment's command chooses which
# (deploy/base/). No local runtime inside: on a cluster, functions run on Knative.
# Linted with hadolint (tests/deploy/test_image.py).

FROM python:3.12-slim-trixie AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.txt deploy/image/requirements.py ./
RUN python requirements.py requirements.txt > requirements-image.txt \
 && python -m venv /opt/hks \
 && /opt/hks/bin/pip install --no-cache-dir -r requirements-image.txt
WORKDIR /app
COPY manage.py ./
COPY hks_portal ./hks_portal
COPY functions ./functions
COPY templates ./templates
COPY static ./static
# Static files are collected at build time; the settings need a secret key to load, not a real one.
RUN HKS_SECRET_KEY=collectstatic-only HKS_DATA_DIR=/tmp/hks HKS_STATIC_ROOT=/app/staticfiles \
    /opt/hks/bin/python manage.py collectstatic --noinput --verbosity 0 \
 && /opt/hks/bin/python -m compileall -q /app

FROM python:3.12-slim-trixie
RUN groupadd --system --gid 10001 hks \
 && useradd --system --uid 10001 --gid hks --home-dir /var/lib/hks --no-create-home --shell /usr/sbin/nologin hks \
 && install -d -o hks -g hks -m 0750 /var/lib/hks
COPY --from=build /opt/hks /opt/hks
COPY --from=build /app /app
ENV PATH=/opt/hks/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=hks_portal.settings \
    HKS_DATA_DIR=/var/lib/hks \
    HKS_STATIC_ROOT=/app/staticfiles
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# The portal; the worker runs `celery -A hks_portal worker`, beat `python -m hks_portal.beat`.
CMD ["uvicorn", "hks_portal.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--forwarded-allow-ips", "*", "--http", "h11", "--h11-max-incomplete-event-size", "32768"]
