"""Dead-letter triage, bulk retry and stuck work (operators and admins). Included at the root."""
from django.urls import path

from . import triage

urlpatterns = [
    path("dead-letters/", triage.triage, name="dead-letter-list"),
    path("dead-letters/<int:dead_letter_id>/", triage.dead_letter_detail, name="dead-letter-detail"),
    path("dead-letters/<int:dead_letter_id>/retry", triage.dead_letter_retry_view, name="dead-letter-retry"),
    path("dead-letters/<int:dead_letter_id>/edit-retry", triage.dead_letter_edit_retry_view,
         name="dead-letter-edit-retry"),
    path("dead-letters/<int:dead_letter_id>/discard", triage.dead_letter_discard_view, name="dead-letter-discard"),
    path("dead-letters/<int:dead_letter_id>/requeue", triage.dead_letter_requeue_view, name="dead-letter-requeue"),
    path("dead-letters/bulk/", triage.bulk_retry_create_view, name="bulk-retry-create"),
    path("dead-letters/bulk/<int:bulk_id>/", triage.bulk_retry_detail, name="bulk-retry-detail"),
    path("dead-letters/bulk/<int:bulk_id>/control", triage.bulk_retry_control_view, name="bulk-retry-control"),
    path("stuck/", triage.stuck_work, name="stuck-work"),
]
