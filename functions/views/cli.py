"""The portal page where a signed-in user approves an ``hks login`` code shown by the CLI."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from functions.auth import cli_login
from functions.errors import ServiceError


@login_required
@require_http_methods(["GET", "POST"])
def cli_approve(request):
    code = cli_login.normalize_user_code(request.POST.get("code") or request.GET.get("code", ""))
    if request.method == "POST" and request.POST.get("decision") == "deny":
        denied = cli_login.cli_login_deny(user_code=code)
        return render(
            request, "cli/approve.html", {"code": code, "denied": denied}, status=200 if denied else 404
        )
    if request.method == "POST":
        try:
            login = cli_login.cli_login_approve(user_code=code, user=request.user)
        except ServiceError as exc:
            return render(request, "cli/approve.html", {"code": code, "error": exc.message}, status=404)
        return render(request, "cli/approve.html", {"code": code, "approved": login})
    pending = cli_login.cli_login_pending(user_code=code) if code else None
    context = {"code": code, "pending": pending}
    if code and pending is None:
        context["error"] = "This code is unknown, expired or already used. Run hks login again."
    return render(request, "cli/approve.html", context, status=404 if "error" in context else 200)
