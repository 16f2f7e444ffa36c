"""The CronJobs of the Knative backend's schedules, as plain dicts (pure functions, like ``k8s_manifests``).

The trigger container runs ``sh -c`` then curl (the curl image's own tools) and sends what
docs/schedules.md promises and the local backend sends: ``User-Agent: hks-scheduler/1``,
``X-HKS-Schedule``, ``X-HKS-Scheduled-For``, a binary-mode CloudEvent's ``ce-*`` headers for CloudEvents
functions, then the schedule's own headers, which win. The request itself is passed as positional
arguments, never parsed by the shell.
"""

from __future__ import annotations

import shlex

from functions.backends.base import FunctionRef, ScheduleSpec
from functions.backends.k8s_manifests import (
    CURL_UID,
    LABEL_COMPONENT,
    LABEL_SCHEDULE,
    ClusterSettings,
    function_labels,
    k8s_name,
    object_meta,
    restricted_security_context,
)

# Schedules ------------------------------------------------------------------------------------------


def cron_job_name(ref: FunctionRef, schedule: str) -> str:
    # CronJob names are capped at 52 characters: the Jobs they create append 11.
    return k8s_name("hks-cron", ref.function, schedule, max_length=52)


# The CronJob controller names each Job "<cronjob>-<scheduled time in minutes since the epoch>"
# (kubernetes pkg/controller/cronjob/utils.go getJobName); the pod reads it from its job-name label, so
# X-HKS-Scheduled-For is the scheduled minute, not the start time. ce-id is that Job's name: one per run.
# The curl image's shell and date are BusyBox's (Alpine): its date takes -u (TZ=UTC0, set before -d is
# read) and "-d @SECONDS" since 1.17 (busybox coreutils/date.c, libbb/time.c parse_datestr). A Job made
# by hand (kubectl create job --from=cronjob/...) has a name of its own: no minute in it, so the time is
# now - and the suffix never reaches $((...)), where ash would read a word as an unset variable (0: 1970)
# and dash stops with "Illegal number".
TRIGGER_SCRIPT = (
    'minutes="${HKS_JOB##*-}"; at=""; '
    'case "$minutes" in ""|*[!0-9]*) ;; '
    '*) at="$(date -u -d "@$((minutes * 60))" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null)";; esac; '
    '[ -n "$at" ] || at="$(date -u +%Y-%m-%dT%H:%M:%SZ)"; '
    'exec curl {fixed} {timed} "$@"'
)


def schedule_headers(spec: ScheduleSpec) -> tuple[list[tuple[str, str]], list[str], list[tuple[str, str]]]:
    """(fixed platform headers, timed header names, the schedule's own headers), as docs/schedules.md
    promises and the local backend sends them: platform headers first, the schedule's own last and
    winning (a platform header the schedule sets is left out)."""
    own = {key.lower() for key in spec.headers}
    fixed = [("User-Agent", "hks-scheduler/1"), ("X-HKS-Schedule", spec.name)]
    timed = ["X-HKS-Scheduled-For"]
    if spec.kind == "cloudevents":  # a binary-mode CloudEvent, as Knative's PingSource sends
        source = f"/projects/{spec.ref.project}/functions/{spec.ref.function}/schedules/{spec.name}"
        fixed += [("ce-specversion", "1.0"), ("ce-type", "dev.hks.schedule"), ("ce-source", source)]
        timed += ["ce-id", "ce-time"]
    fixed = [(k, v) for k, v in fixed if k.lower() not in own]
    timed = [k for k in timed if k.lower() not in own]
    return fixed, timed, sorted(spec.headers.items())


def trigger_command(spec: ScheduleSpec, settings: ClusterSettings) -> list[str]:
    """``sh -c SCRIPT`` plus the request as positional arguments (never parsed by the shell)."""
    fixed, timed, own = schedule_headers(spec)
    url = spec.target_url
    if not url.startswith(("http://", "https://")):
        url = f"http://{spec.ref.function}.{spec.ref.namespace}.svc.cluster.local{spec.path}"
    values = {"X-HKS-Scheduled-For": "$at", "ce-time": "$at", "ce-id": "$HKS_JOB"}
    fixed_args = " ".join(f"--header {shlex.quote(f'{k}: {v}')}" for k, v in fixed)
    timed_args = " ".join(f'--header "{name}: {values[name]}"' for name in timed)
    script = TRIGGER_SCRIPT.replace("{timed}", timed_args).replace("{fixed}", fixed_args)
    args = [
        "--silent",
        "--show-error",
        "--fail",
        "--max-time",
        str(settings.schedule_timeout_seconds),
        "--request",
        spec.method.upper(),
    ]
    for key, value in own:
        args += ["--header", f"{key}: {value}"]
    if spec.body:
        args += ["--data-binary", spec.body]
    return ["/bin/sh", "-c", script, "hks-schedule", *args, url]


def cron_job(spec: ScheduleSpec, settings: ClusterSettings) -> dict:
    """A CronJob that sends the schedule's HTTP request to the function with curl."""
    labels = function_labels(spec.ref, **{LABEL_SCHEDULE: spec.name, LABEL_COMPONENT: "schedule"})
    cron_spec = {
        "schedule": spec.cron,
        "timeZone": spec.timezone,
        "concurrencyPolicy": spec.concurrency_policy,
        "suspend": not spec.enabled,
        "successfulJobsHistoryLimit": settings.schedule_history,
        "failedJobsHistoryLimit": settings.schedule_history,
        "jobTemplate": {
            "metadata": {"labels": labels},
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": settings.schedule_timeout_seconds + 30,
                "ttlSecondsAfterFinished": 24 * 3600,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "containers": [
                            {
                                "name": "trigger",
                                "image": settings.curl_image,
                                "command": trigger_command(spec, settings),
                                "env": [
                                    {
                                        "name": "HKS_JOB",
                                        "valueFrom": {
                                            "fieldRef": {"fieldPath": "metadata.labels['job-name']"}
                                        },
                                    }
                                ],
                                "resources": {
                                    "requests": {"cpu": "10m", "memory": "16Mi"},
                                    "limits": {"cpu": "100m", "memory": "64Mi"},
                                },
                                "securityContext": restricted_security_context(run_as_user=CURL_UID),
                            }
                        ],
                    },
                },
            },
        },
    }
    if spec.starting_deadline_seconds is not None:
        cron_spec["startingDeadlineSeconds"] = spec.starting_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": object_meta(cron_job_name(spec.ref, spec.name), spec.ref, labels),
        "spec": cron_spec,
    }
