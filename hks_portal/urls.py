from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from functions.agents.api import internal_api
from functions.agents.e2b_api import e2b_entry
from functions.api import api
from functions.auth.login_guard import GuardedAuthenticationForm

urlpatterns = [
    path("admin/", admin.site.urls),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(authentication_form=GuardedAuthenticationForm),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", api.urls),
    path("internal/v1/", internal_api.urls),
    # E2B's SDKs (E2B_API_URL = E2B_SANDBOX_URL = <portal>/e2b): functions/e2b_api.py
    path("e2b", e2b_entry),
    path("e2b/<path:rest>", e2b_entry),
    path("", include("functions.urls")),
]
