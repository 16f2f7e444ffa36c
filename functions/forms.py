"""Forms of the dashboard: they parse and check input; services do the writing."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Count, Q

from functions.models import FunctionStatus
from functions.validators import check_env

STATUS_FILTERS = [
    ("", "Any status"),
    ("ready", "Ready"),
    ("scaled-to-zero", "Scaled to zero"),
    (FunctionStatus.BUILDING, "Building"),
    (FunctionStatus.DEPLOYING, "Deploying"),
    (FunctionStatus.PENDING, "Pending"),
    (FunctionStatus.FAILED, "Failed"),
    (FunctionStatus.DELETING, "Deleting"),
]
SORTS = {
    "name": ("name",),
    "-name": ("-name",),
    "status": ("status", "name"),
    "-status": ("-status", "name"),
    "runtime": ("runtime", "name"),
    "-runtime": ("-runtime", "name"),
    "-deployed": ("-deployed_at", "name"),
    "deployed": ("deployed_at", "name"),
}
# Sorts by a live figure (metrics.FunctionFigures' field), "-" highest first; functions without one last.
METRIC_SORTS = {
    "-rpm": "rpm",
    "-p95": "p95_ms",
    "-errors": "error_rate",
    "-cpu": "cpu_cores",
    "-memory": "memory_bytes",
}
METRIC_SORTS.update({key[1:]: figure for key, figure in list(METRIC_SORTS.items())})
SORT_CHOICES = [
    ("name", "Name A–Z"),
    ("-name", "Name Z–A"),
    ("status", "Status"),
    ("-status", "Status, reversed"),
    ("runtime", "Runtime"),
    ("-runtime", "Runtime, reversed"),
    ("-deployed", "Newest deploy"),
    ("deployed", "Oldest deploy"),
    ("-rpm", "Most requests"),
    ("-p95", "Slowest (p95)"),
    ("-errors", "Most errors"),
    ("-cpu", "Most CPU"),
    ("-memory", "Most memory"),
    ("rpm", "Fewest requests"),
    ("p95", "Fastest (p95)"),
    ("errors", "Fewest errors"),
    ("cpu", "Least CPU"),
    ("memory", "Least memory"),
]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def status_filter(status: str) -> Q:
    """The functions a status filter (a key of ``STATUS_FILTERS``; "" for any) keeps."""
    if status == "scaled-to-zero":
        return Q(status=FunctionStatus.READY, replicas=0)
    if status == "ready":
        return Q(status=FunctionStatus.READY, replicas__gt=0)
    return Q(status=status) if status else Q()


class FunctionFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=63, label="Search")
    status = forms.ChoiceField(required=False, choices=STATUS_FILTERS)
    sort = forms.ChoiceField(required=False, choices=SORT_CHOICES)

    def search(self, queryset):
        """The functions whose name has the search text; invalid input filters nothing."""
        if self.is_valid() and self.cleaned_data["q"]:
            return queryset.filter(name__icontains=self.cleaned_data["q"])
        return queryset

    def filter(self, queryset):
        """Apply the search, status filter and sort; invalid input filters nothing."""
        if not self.is_valid():
            return queryset
        queryset = self.search(queryset).filter(status_filter(self.status_key()))
        return queryset.order_by(*SORTS.get(self.cleaned_data["sort"] or "name", ("name",)))

    def status_counts(self, queryset) -> dict[str, int]:
        """How many of the searched functions each status filter keeps ("" = all): one query."""
        counts = {key or "all": Count("pk", filter=status_filter(key)) for key, _ in STATUS_FILTERS}
        answer = self.search(queryset).order_by().aggregate(**counts)
        return {key: answer[key or "all"] or 0 for key, _ in STATUS_FILTERS}

    def status_key(self) -> str:
        return self.cleaned_data["status"] if self.is_valid() else ""

    def metric_sort(self) -> tuple[str, bool] | None:
        """(figure, highest first) to sort rows by once the metrics are in (the queryset is in name order)."""
        if not self.is_valid() or self.cleaned_data["sort"] not in METRIC_SORTS:
            return None
        key = self.cleaned_data["sort"]
        return METRIC_SORTS[key], key.startswith("-")

    def sort_key(self) -> str:
        return (self.cleaned_data["sort"] if self.is_valid() else "") or "name"


def _parse_lines(text: str, separator: str, what: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(separator)
        if not sep or not key.strip():
            raise ValidationError(f"line {number}: expected {what}")
        result[key.strip()] = value.strip()
    return result


class InvokeForm(forms.Form):
    method = forms.ChoiceField(choices=[(m, m) for m in METHODS], initial="POST")
    path = forms.CharField(initial="/", max_length=2000)
    headers = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), help_text="One 'Name: value' per line"
    )
    body = forms.CharField(required=False, max_length=1_000_000, widget=forms.Textarea(attrs={"rows": 6}))

    def clean_headers(self) -> dict[str, str]:
        return _parse_lines(self.cleaned_data["headers"], ":", "'Name: value'")


class WriteOnlyTextarea(forms.Textarea):
    """Never renders a value, not even the one just posted: a page must not show a secret."""

    def format_value(self, value):
        return None


class SettingsForm(forms.Form):
    env = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 5}), help_text="One NAME=value per line"
    )
    secrets = forms.CharField(
        required=False,
        label="Set secrets",
        widget=WriteOnlyTextarea(attrs={"rows": 3, "autocomplete": "off"}),
        help_text="One NAME=value per line, to add or replace; write-only, never shown again",
    )
    remove_secrets = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple)
    min_scale = forms.IntegerField(min_value=0, max_value=100)
    max_scale = forms.IntegerField(min_value=1, max_value=1000)
    target_concurrency = forms.IntegerField(min_value=1, max_value=10_000)
    container_concurrency = forms.IntegerField(min_value=0, max_value=10_000, help_text="0 = unlimited")
    cpu_millicores = forms.IntegerField(min_value=10, label="CPU (millicores)")
    memory_mb = forms.IntegerField(min_value=16, label="Memory (MiB)")
    timeout_seconds = forms.IntegerField(min_value=1, max_value=3600)

    FIELDS = (
        "min_scale",
        "max_scale",
        "target_concurrency",
        "container_concurrency",
        "cpu_millicores",
        "memory_mb",
        "timeout_seconds",
    )

    @classmethod
    def for_function(cls, function, data=None) -> SettingsForm:
        initial = {name: getattr(function, name) for name in cls.FIELDS}
        initial["env"] = "\n".join(
            f"{k}={v}" for k, v in sorted(function.env.items()) if k not in function.secret_env
        )
        form = cls(data=data, initial=initial)
        names = sorted(function.secret_env)
        form.fields["remove_secrets"].choices = [(name, name) for name in names]
        if names:
            form.fields["secrets"].help_text += f". Stored: {', '.join(names)}"
        else:
            form.fields["remove_secrets"].widget = forms.MultipleHiddenInput()
        return form

    def clean_secrets(self) -> dict[str, str]:
        secrets = _parse_lines(self.cleaned_data["secrets"], "=", "NAME=value")
        try:
            check_env(secrets)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        return secrets

    def clean_env(self) -> dict[str, str]:
        env = _parse_lines(self.cleaned_data["env"], "=", "NAME=value")
        try:
            return check_env(env)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc

    def clean(self):
        data = super().clean()
        if data.get("min_scale") is not None and data.get("max_scale") is not None:
            if data["min_scale"] > data["max_scale"]:
                raise ValidationError("min scale cannot be above max scale")
        return data

    def changes(self) -> dict:
        secrets = {name: None for name in self.cleaned_data["remove_secrets"]}
        secrets.update(self.cleaned_data["secrets"])
        return {name: self.cleaned_data[name] for name in ("env", *self.FIELDS)} | {"secrets": secrets}


class MetricsRangeForm(forms.Form):
    """A chart window (15m … 24h) or a custom range in UTC (``datetime-local`` inputs)."""

    FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
    start = forms.DateTimeField(required=False, input_formats=FORMATS, label="From (UTC)")
    end = forms.DateTimeField(required=False, input_formats=FORMATS, label="To (UTC)")

    def range(self):
        """(start, end) as aware UTC datetimes, or (None, None) when not given or not valid."""
        import datetime as dt

        if not self.is_valid() or not (self.cleaned_data["start"] and self.cleaned_data["end"]):
            return None, None
        start, end = (self.cleaned_data[k].replace(tzinfo=dt.UTC) for k in ("start", "end"))
        return (start, end) if start < end else (None, None)

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end") and data["start"] >= data["end"]:
            raise ValidationError("the range must end after it starts")
        return data


class LogSearchForm(forms.Form):
    """Search a function's log: a time range in UTC, streams, text; ``before`` pages to older lines."""

    FORMATS = MetricsRangeForm.FORMATS
    start = forms.DateTimeField(required=False, input_formats=FORMATS, label="From (UTC)")
    end = forms.DateTimeField(required=False, input_formats=FORMATS, label="To (UTC)")
    stream = forms.MultipleChoiceField(
        required=False,
        choices=[("stdout", "stdout"), ("stderr", "stderr"), ("request", "requests"), ("system", "system")],
        widget=forms.CheckboxSelectMultiple,
        label="Streams",
    )
    q = forms.CharField(required=False, max_length=200, label="Text")
    before = forms.DateTimeField(required=False, widget=forms.HiddenInput)

    def query(self) -> dict:
        """Keyword arguments for ``logstream.search``, times as aware UTC."""
        import datetime as dt

        data = self.cleaned_data

        def utc(value):
            if value is None:
                return None
            return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)

        return {
            "start": utc(data["start"]),
            "end": utc(data["end"]),
            "before": utc(data["before"]),
            "streams": tuple(data["stream"]),
            "text": data["q"],
        }


class QuotasForm(forms.Form):
    """A project's agent quotas, as owners change them on the usage page (0 CPU seconds: no daily limit)."""

    max_sessions = forms.IntegerField(min_value=0, max_value=1_000_000, label="Concurrent sessions")
    max_executions_per_minute = forms.IntegerField(
        min_value=0, max_value=1_000_000, label="Executions per minute"
    )
    max_cpu_seconds_per_day = forms.IntegerField(
        min_value=0, max_value=1_000_000, label="CPU seconds per day", help_text="0: no daily limit"
    )
    max_instances = forms.IntegerField(
        min_value=0,
        max_value=1_000_000,
        label="Function instances at once",
        help_text="on the local runtime; starts past it wait (the runtime is told at once)",
    )
