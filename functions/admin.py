"""The operators' admin: projects with quotas and members, functions, tokens and the audit log.

Destructive actions go through services (a "force delete" is ``services.function_delete``, which tears the
function down on its backend), never through the admin's own row deletion.
"""

from django.contrib import admin, messages
from django.utils import timezone

from functions import models, selectors
from functions.services import functions as services
from functions.services import projects as services_projects
from functions.services import usage as services_usage
from functions.services.audit import audit

QUOTA_FIELDS = (
    "max_sessions",
    "max_executions_per_minute",
    "max_cpu_seconds_per_day",
    "max_storage_mb",
    "max_instances",
)

admin.site.site_header = "HKS Functions operations"
admin.site.site_title = "HKS Functions"
admin.site.index_title = "Operations"


class MembershipInline(admin.TabularInline):
    model = models.Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(models.Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "backend",
        "max_functions",
        "max_agent_functions",
        "max_cpu_millicores",
        "max_memory_mb",
        "sessions_running",
        "max_sessions",
        "max_executions_per_minute",
        "executions_today",
        "cpu_seconds_today",
        "cpu_seconds_month",
        "max_cpu_seconds_per_day",
        "max_storage_mb",
        "max_instances",
        "created_at",
    ]
    # Operators change these quotas right in the list (each change is audited as project.quotas).
    list_editable = list(QUOTA_FIELDS)
    list_filter = ["backend", "created_at"]
    search_fields = ["slug", "name", "namespace"]
    readonly_fields = [
        "created_at",
        "has_kubeconfig",
        "storage_used",
        "cluster_state",
        "cluster_message",
        "cluster_synced_at",
    ]
    fieldsets = [
        (None, {"fields": ["slug", "name", "backend", "namespace", "has_kubeconfig", "created_at"]}),
        ("On the cluster", {"fields": ["cluster_state", "cluster_message", "cluster_synced_at"]}),
        (
            "Quotas",
            {
                "fields": [
                    "max_functions",
                    "max_agent_functions",
                    "max_sessions",
                    "max_executions_per_minute",
                    "max_cpu_seconds_per_day",
                    "max_cpu_millicores",
                    "max_memory_mb",
                    "max_storage_mb",
                    "storage_used",
                    "max_instances",
                ]
            },
        ),
    ]
    inlines = [MembershipInline]

    @admin.display(boolean=True, description="Kubeconfig stored")
    def has_kubeconfig(self, obj):
        return obj.has_kubeconfig

    def get_queryset(self, request):
        return selectors.projects_with_agent_usage(queryset=super().get_queryset(request))

    @admin.display(description="Storage used")
    def storage_used(self, obj):
        """Archives and artifacts of its stored revisions (the /ops/ overview lists it for every project)."""
        used = selectors.project_storage_used(project=obj) if obj.pk else 0
        return f"{used / (1 << 20):.1f} MiB of {obj.max_storage_mb} MiB"

    @admin.display(description="Sessions running", ordering="usage_sessions_running")
    def sessions_running(self, obj):
        return obj.usage_sessions_running

    @admin.display(description="Executions today (UTC)", ordering="usage_executions_today")
    def executions_today(self, obj):
        return obj.usage_executions_today or 0

    @admin.display(description="CPU s today", ordering="usage_cpu_today")
    def cpu_seconds_today(self, obj):
        figure = round(obj.usage_cpu_today or 0.0, 1)
        unmeasured = obj.usage_unmeasured_today or 0
        if not unmeasured:
            return figure
        return f"not measured ({unmeasured})" if not figure else f"{figure} + {unmeasured} not measured"

    @admin.display(description="CPU s this month", ordering="usage_cpu_month")
    def cpu_seconds_month(self, obj):
        return round(obj.usage_cpu_month or 0.0, 1)

    # A knative project's namespace, quota and policies follow its row (functions/services/projects.py).
    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        quotas = [f for f in form.changed_data if f in QUOTA_FIELDS]
        if change and quotas:
            changes = {f: [form.initial.get(f), getattr(obj, f)] for f in quotas}
            audit(project=obj, action="project.quotas", actor=request.user, changes=changes, via="admin")
        if change and "max_instances" in quotas:
            services_usage.project_instance_quota_push(project=obj)
        services_projects.project_provision(project=obj)

    def delete_model(self, request, obj):
        services_projects.project_delete(project=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for project in queryset:
            services_projects.project_delete(project=project, actor=request.user)


@admin.register(models.Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["project", "user", "role", "created_at"]
    list_filter = ["role", "project"]
    search_fields = ["project__slug", "user__username", "user__email"]
    autocomplete_fields = ["project", "user"]


@admin.register(models.Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Pending invitations; operators add members directly under Memberships."""

    list_display = ["project", "username", "role", "invited_by", "created_at"]
    list_filter = ["role", "project"]
    search_fields = ["project__slug", "username"]
    readonly_fields = ["invited_by", "created_at"]


class RevisionInline(admin.TabularInline):
    model = models.Revision
    extra = 0
    can_delete = False
    fields = [
        "number",
        "content_hash",
        "size_bytes",
        "artifact",
        "artifact_bytes",
        "created_by",
        "created_at",
    ]
    readonly_fields = fields
    show_change_link = True


@admin.register(models.Function)
class FunctionAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "project",
        "status",
        "runtime",
        "replicas",
        "current_revision",
        "ephemeral",
        "deployed_at",
        "updated_at",
    ]
    list_filter = ["status", "runtime", "ephemeral", "sandbox_profile", "visibility", "project__backend"]
    search_fields = ["name", "project__slug", "status_message", "url"]
    list_select_related = ["project", "current_revision"]
    readonly_fields = [
        "status",
        "status_message",
        "url",
        "internal_url",
        "replicas",
        "current_revision",
        "desired_revision",
        "created_by",
        "created_at",
        "updated_at",
        "deployed_at",
        "deleted_at",
    ]
    raw_id_fields = ["project"]
    inlines = [RevisionInline]
    actions = ["force_delete"]

    @admin.action(description="Force delete (tear down on the backend)")
    def force_delete(self, request, queryset):
        count = 0
        for function in queryset.select_related("project").exclude(status=models.FunctionStatus.DELETED):
            services.function_delete(function=function, user=request.user)
            count += 1
        self.message_user(request, f"Deleting {count} function(s).", messages.SUCCESS)

    def has_delete_permission(self, request, obj=None):
        return False  # rows go through force delete, so the backend is cleaned up too

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


@admin.register(models.Revision)
class RevisionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "number", "content_hash", "size_bytes", "created_at"]
    list_filter = ["created_at", "function__runtime"]
    search_fields = ["function__name", "function__project__slug", "content_hash"]
    list_select_related = ["function__project"]
    raw_id_fields = ["function", "created_by"]


@admin.register(models.Build)
class BuildAdmin(admin.ModelAdmin):
    list_display = ["__str__", "status", "created_at", "started_at", "finished_at"]
    list_filter = ["status", "created_at"]
    search_fields = ["revision__function__name", "revision__function__project__slug", "message"]
    list_select_related = ["revision__function__project"]
    raw_id_fields = ["revision"]


@admin.register(models.ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "token_prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]
    list_filter = ["created_at", "expires_at", "revoked_at"]
    search_fields = ["name", "token_prefix", "user__username"]
    readonly_fields = ["token_prefix", "created_at", "last_used_at", "revoked_at"]
    raw_id_fields = ["user"]
    actions = ["revoke"]

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)

    def has_add_permission(self, request):
        return False  # a token's plaintext is shown once, to its owner: they create them from the CLI


@admin.register(models.Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    list_display = ["name", "function", "cron", "timezone", "enabled", "next_run_at", "last_scheduled_at"]
    list_filter = ["enabled", "concurrency_policy", "timezone"]
    search_fields = ["name", "function__name", "function__project__slug", "cron"]
    list_select_related = ["function__project"]
    raw_id_fields = ["function"]


@admin.register(models.AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "project", "actor", "action", "function_name"]
    list_filter = ["action", "created_at", "project"]
    search_fields = ["action", "function_name", "project__slug", "actor__username"]
    list_select_related = ["project", "actor"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(models.AgentCredential)
class AgentCredentialAdmin(admin.ModelAdmin):
    """Agent credentials are created here; the secret is shown once, in the confirmation message."""

    list_display = ["name", "project", "key_prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at", "created_at", "project"]
    search_fields = ["name", "key_prefix", "project__slug"]
    list_select_related = ["project", "created_by"]
    fields = ["project", "name", "key_prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["key_prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        credential, secret = models.AgentCredential.issue(
            project=obj.project, name=obj.name, user=request.user
        )
        obj.pk = credential.pk
        note = f"Agent credential for {obj.project.slug}: {secret} — copy it now, it is not shown again."
        self.message_user(request, note, messages.WARNING)

    @admin.action(description="Revoke selected credentials")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} credential(s).", messages.SUCCESS)


@admin.register(models.AgentSession)
class AgentSessionAdmin(admin.ModelAdmin):
    """Agents' sessions (functions/agents/sessions.py): read-only here; agents create and kill them."""

    list_display = ["sandbox_id", "project", "status", "template", "created_at", "expires_at", "ended_at"]
    list_filter = ["status", "project"]
    search_fields = ["sandbox_id"]
    readonly_fields = [f.name for f in models.AgentSession._meta.fields]

    def has_add_permission(self, request):
        return False
