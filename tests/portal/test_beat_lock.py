"""Celery beat behind its Redis lock (hks_portal/beat.py), with real beat processes on the real Redis:
a second beat waits while the first holds the lock, takes over when the first stops, and a beat whose
lock was taken from it stops instead of firing alongside the new holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from django.conf import settings

REPO = Path(__file__).resolve().parents[2]
TTL = 2


@pytest.fixture
def beats(tmp_path):
    key = f"hks-test-beat-lock-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HKS_", "DJANGO_", "PYTEST"))}
    env.update(
        HKS_DATA_DIR=str(tmp_path),
        REDIS_URL=settings.REDIS_URL,
        HKS_BEAT_LOCK_KEY=key,
        HKS_BEAT_LOCK_TTL=str(TTL),
        HKS_CELERY_QUEUE=key,  # what these beats send goes nowhere near a worker
        HKS_SECRET_KEY="beat-lock-test",
    )
    started: list[subprocess.Popen] = []
    client = redis.Redis.from_url(settings.REDIS_URL)

    def start(name: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        command = [sys.executable, "-m", "hks_portal.beat", "--schedule", str(tmp_path / f"{name}.db")]
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        process.log = tmp_path / f"{name}.log"
        started.append(process)
        return process

    start.key, start.client = key, client
    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)
    client.delete(key)  # the lock, and the queue of the same name


def _holder(beats) -> str:
    value = beats.client.get(beats.key)
    return value.decode() if value else ""


def _wait(predicate, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_second_beat_waits_for_the_lock_and_takes_over_when_the_first_stops(beats):
    first = beats("first")
    assert _wait(lambda: f":{first.pid}:" in _holder(beats)), first.log.read_text()
    second = beats("second")
    assert _wait(lambda: "waiting" in second.log.read_text())

    time.sleep(TTL * 2)  # several renewals: the first keeps it, the second still waits
    assert f":{first.pid}:" in _holder(beats)
    assert "acquired" not in second.log.read_text()
    assert second.poll() is None

    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert _wait(lambda: f":{second.pid}:" in _holder(beats)), second.log.read_text()
    assert _wait(lambda: "is starting" in second.log.read_text())  # celery beat vX is starting.


def test_a_beat_that_loses_its_lock_stops_instead_of_firing_twice(beats):
    first = beats("first")
    assert _wait(lambda: f":{first.pid}:" in _holder(beats))

    beats.client.set(beats.key, "another-beat:1:x", ex=60)  # e.g. it was cut off past its TTL

    assert first.wait(30) == 3
    assert "lost (the lock is no longer ours)" in first.log.read_text()
    assert _holder(beats) == "another-beat:1:x"  # it did not release someone else's lock
