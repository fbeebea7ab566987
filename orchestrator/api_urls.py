from django.urls import path, re_path

from . import api

urlpatterns = [
    path("openapi.json", api.openapi, name="api-openapi"),
    path("tasks", api.tasks, name="api-tasks"),
    path("tasks/<int:task_id>", api.task_detail, name="api-task-detail"),
    path("approvals", api.approvals, name="api-approvals"),
    path("approvals/<int:approval_id>/decision", api.approval_decision, name="api-approval-decision"),
    path("dead-letters", api.dead_letters, name="api-dead-letters"),
    path("dead-letters/<int:dead_letter_id>/retry", api.dead_letter_retry, name="api-dead-letter-retry"),
    # Last: anything else under /api/v1/ is a JSON 404 (even with DEBUG on), not the site's HTML page.
    re_path(r"", api.not_found, name="api-not-found"),
]
