"""/metrics (Prometheus, bearer token) and the charts page with its CSV downloads (session)."""
from __future__ import annotations

import csv
from urllib.parse import urlencode

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.views.decorators.http import require_safe
from django_prometheus.exports import ExportToDjangoView

from orchestrator.presenters import render_page
from orchestrator.roles import ADMIN, OPERATOR, api_view, role_required

from .charts import CHARTS, chart_filters, filter_choices
from .rollups import rollups_catch_up_for_reader


@api_view(OPERATOR, ADMIN)
def metrics(request: HttpRequest) -> HttpResponse:
    return ExportToDjangoView(request)


@require_safe  # GET and HEAD: monitors and link checkers probe pages with HEAD
@role_required(OPERATOR, ADMIN)
def charts(request: HttpRequest) -> HttpResponse:
    rollups_catch_up_for_reader()
    filters = chart_filters(request.GET)
    # The CSV links carry the same range and filters (empty form fields left out). A refused range
    # is shown as the last 24 hours, so the links ask for that: the CSV refuses what the page did.
    params = [(key, value) for key, value in request.GET.items() if value]
    if filters.errors:
        params = [("range", filters.range)] + [(k, v) for k, v in params if k not in ("range", "from", "to")]
    query = urlencode(params)
    context = {
        "filters": filters,
        "charts": [build(filters) for build in CHARTS.values()],
        "choices": filter_choices(),
        "query": query,
        "ranges": [("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days"), ("custom", "Custom")],
    }
    template = "metrics/charts.html#charts-body" if request.htmx else "metrics/charts.html"
    return render_page(request, template, context)


@require_safe
@role_required(OPERATOR, ADMIN)
def chart_csv(request: HttpRequest, slug: str) -> HttpResponse:
    build = CHARTS.get(slug)
    if build is None:
        raise Http404("No such chart")
    filters = chart_filters(request.GET)
    if filters.errors:
        # The page falls back to the last 24 hours and says so; a file cannot say so, and a CSV of
        # another range under the asked-for name would be filed as the wrong figures.
        return HttpResponseBadRequest(" ".join(filters.errors), content_type="text/plain; charset=utf-8")
    rollups_catch_up_for_reader()
    chart = build(filters)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    stamp = f"{filters.start:%Y%m%d%H}-{filters.end:%Y%m%d%H}"
    response["Content-Disposition"] = f'attachment; filename="steward-{slug}-{stamp}.csv"'
    writer = csv.writer(response)
    writer.writerow(chart.columns)
    for row in chart.rows:
        # Cells that a spreadsheet would run as a formula are quoted with a leading apostrophe.
        writer.writerow(["'" + c if isinstance(c, str) and c[:1] in ("=", "+", "-", "@") else c for c in row])
    return response
