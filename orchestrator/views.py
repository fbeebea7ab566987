# Placeholder while the pages are written (replaced in the pages commit).
from django.http import Http404, JsonResponse


def healthz(request):
    return JsonResponse({"status": "ok"})


def _todo(request, *args, **kwargs):
    raise Http404


home = task_list = task_detail = upload = dead_letter_list = dead_letter_retry_view = approval_decide_view = _todo
