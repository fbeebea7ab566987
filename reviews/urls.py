from django.urls import path

from . import views

urlpatterns = [
    path("", views.inbox, name="review-inbox"),
    path("approvals/<int:approval_id>/", views.item, name="review-item"),
    path("approvals/<int:approval_id>/decide", views.decide, name="review-decide"),
    path("link/<str:token>/", views.link, name="review-link"),
]
