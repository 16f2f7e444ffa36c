from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

from . import selectors


@login_required
def home(request):
    project = selectors.projects_for_user(user=request.user).first()
    if project is None:
        return render(request, "functions/no_projects.html")
    return redirect("function_list", project=project.slug)


@login_required
def function_list(request, project: str):
    project_obj = selectors.project_get_for_user(user=request.user, slug=project)
    functions = selectors.functions_for_project(project=project_obj)
    return render(request, "functions/function_list.html", {"project": project_obj, "functions": functions})
