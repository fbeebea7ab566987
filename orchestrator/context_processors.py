from .llm import provider
from .roles import user_roles


def steward(request):
    """Roles for menus, and whether model answers come from the simulator (labelled everywhere)."""
    return {"roles": user_roles(request.user), "llm_provider": provider()}
