"""/metrics: Prometheus text format, for an operator's or admin's bearer token."""
from django.http import HttpRequest, HttpResponse
from django_prometheus.exports import ExportToDjangoView

from orchestrator.roles import ADMIN, OPERATOR, api_view


@api_view(OPERATOR, ADMIN)
def metrics(request: HttpRequest) -> HttpResponse:
    return ExportToDjangoView(request)
