from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from metrics import views as metrics_views
from orchestrator import views
from orchestrator.login import AdminLoginForm, LoginForm

admin.site.login_form = AdminLoginForm  # throttled like Steward's own login page

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True, authentication_form=LoginForm),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("tasks/", views.task_list, name="task-list"),
    path("tasks/<int:task_id>/", views.task_detail, name="task-detail"),
    path("upload/", views.upload, name="upload"),
    path("", include("orchestrator.triage_urls")),
    path("approvals/<int:approval_id>/decide", views.approval_decide_view, name="approval-decide"),
    path("reviews/", include("reviews.urls")),
    path("api/v1/", include("orchestrator.api_urls")),
    path("metrics", metrics_views.metrics, name="metrics"),
    path("charts/", metrics_views.charts, name="charts"),
    path("charts/<slug:slug>.csv", metrics_views.chart_csv, name="chart-csv"),
    path("admin/", admin.site.urls),
]

# JSON under /api/, the usual pages elsewhere (unknown /api/v1/ paths: api_urls' own catch-all).
handler400 = "orchestrator.api.bad_request"
handler500 = "orchestrator.api.server_error"
