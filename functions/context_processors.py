from functions.selectors import projects_for_user


def projects(request):
    """The projects the signed-in user belongs to, for the project switcher."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"user_projects": []}
    return {"user_projects": list(projects_for_user(user=user).only("slug", "name"))}
