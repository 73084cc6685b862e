"""Reads for the portal's broadcast pages."""

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.db.models import Q
from django.template.defaultfilters import pluralize
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult, get_date_max

from .models import COUNTRY_NAMES, Broadcast
from .tasks import FAN_OUT_ATTEMPTS


def with_fan_out_state(broadcasts: Iterable[Broadcast]) -> list[Broadcast]:
    """The broadcasts, each with `max_attempts` and, while retrying, `next_attempt_at`: when its
    fan-out job runs again (the job engine's backoff, read from the job's row)."""
    broadcasts = list(broadcasts)
    retrying = {b.job_id: b for b in broadcasts if b.status == Broadcast.Status.RETRYING and b.job_id}
    waiting = DBTaskResult.objects.filter(pk__in=retrying, status=TaskResultStatus.READY).exclude(
        run_after=get_date_max()
    )
    next_runs = dict(waiting.values_list("pk", "run_after"))
    for broadcast in broadcasts:
        broadcast.max_attempts = FAN_OUT_ATTEMPTS
        broadcast.next_attempt_at = next_runs.get(broadcast.job_id)
    return broadcasts


# The review names this many chosen users, then says how many more.
NAMED_USERS = 5


def describe_audience(audience: str, *, country: str = "", user_ids=()) -> str:
    """The audience in words, for the review before sending: "All hosts in Kenya",
    "3 chosen users: Amara Okafor, Kwame Mensah, Zainab Bello"."""
    if audience == Broadcast.Audience.HOSTS_IN_COUNTRY:
        return f"All hosts in {COUNTRY_NAMES.get(country, country)}"
    if audience == Broadcast.Audience.USER_IDS:
        return _chosen_users(list(user_ids))
    return Broadcast.Audience(audience).label


def _chosen_users(user_ids: list[int]) -> str:
    users = get_user_model().objects.filter(pk__in=user_ids[:NAMED_USERS]).order_by("first_name", "last_name", "pk")
    names = ", ".join(str(user) for user in users)
    more = len(user_ids) - NAMED_USERS
    if more > 0:
        names += f" and {more} more"
    count = len(user_ids)
    return f"{count} chosen user{pluralize(count)}: {names}"


# The user picker shows at most this many matches: enough to pick from, short enough to read.
USER_MATCHES = 10


def search_users(query: str) -> list:
    """Active users whose name, username or e-mail contains `query` (the user picker's matches)."""
    users = get_user_model().objects.filter(is_active=True)
    for word in query.split():
        users = users.filter(
            Q(first_name__icontains=word)
            | Q(last_name__icontains=word)
            | Q(username__icontains=word)
            | Q(email__icontains=word)
        )
    return list(users.order_by("first_name", "last_name", "username")[:USER_MATCHES])
