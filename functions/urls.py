from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("p/<slug:project>/", views.function_list, name="function_list"),
]
