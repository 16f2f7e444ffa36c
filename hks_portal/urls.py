from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from functions.api import api
from functions.internal_api import internal_api
from functions.login_guard import GuardedAuthenticationForm

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
    path("", include("functions.urls")),
]
