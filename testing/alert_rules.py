"""The Prometheus alert rules (deploy/prometheus/alerts.yml) and their promtool unit tests, read
for tests: which alerts exist, which metric names each one's expression uses, which job
exports each name.

`metric_names(expr)` is a small PromQL scanner rather than a parser: it drops what can hold
no metric name (strings, label matchers, ranges, grouping label lists, durations, numbers),
then keeps each identifier that is neither a keyword nor a function call. That is all our
expressions need; portal/tests/test_alert_rules.py holds it to the rules file.
"""

import re
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
ALERTS_FILE = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST_FILE = ROOT / "deploy" / "prometheus" / "alerts_test.yml"

# The metric names the endpoints promise (the contract between them and the rules), as an
# expression selects them: a histogram by its `_bucket` series.
PORTAL_METRICS = {
    "http_request_duration_seconds_bucket",
    "http_responses_total",
    "ledger_operations_total",
    "webhook_events_total",
    "withdrawals_pending",
    "withdrawals_pending_oldest_age_seconds",
    "approvals_pending",
    "jobs_queue_depth",
    "jobs_failed_total",
    "ledger_check_ok",
    "ledger_check_last_run_timestamp_seconds",
    "portal_ready",
    "payouts_processing",
    "payout_oldest_processing_age_seconds",
    "payout_stuck_after_seconds",
    "reconciliation_unreconciled_day_backlog",
    "reconciliation_unresolved_lines",
    "reconciliation_last_reconciled_day_timestamp",
}
MESSAGING_METRICS = {
    "messaging_messages_accepted_total",
    "messaging_messages_routed_total",
    "messaging_messages_delivered_total",
    "messaging_messages_dropped_total",
    "messaging_persistence_batches_total",
    "messaging_persistence_lag_seconds",
    "messaging_wal_bytes",
    "messaging_messages_dead_lettered_total",
    "messaging_websocket_connections",
    "messaging_vm_memory_bytes",
    "messaging_vm_processes",
    "messaging_cluster_members",
    "messaging_up",
}

# Series Prometheus makes itself for every target; no endpoint of ours exports them.
PROMETHEUS_MADE = frozenset({"up"})

_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"atan2", "inf", "nan"}
)
_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# An identifier not glued to a preceding digit or dot (so no `5m`, `1e3`, `0.5`).
_IDENTIFIER = re.compile(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects, e.g. {"up", "portal_ready"}."""
    text = _STRINGS.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        is_call = text[match.end() :].lstrip().startswith("(")
        if not is_call and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


@cache
def alert_rules() -> tuple[dict, ...]:
    """Every alerting rule of alerts.yml (its `alert`, `expr`, `for`, `labels`, `annotations`)."""
    groups = yaml.safe_load(ALERTS_FILE.read_text())["groups"]
    return tuple(rule for group in groups for rule in group["rules"] if "alert" in rule)


def alert_metric_names() -> dict[str, set[str]]:
    """Each alert's name → the metric names its expression uses."""
    return {rule["alert"]: metric_names(rule["expr"]) for rule in alert_rules()}


def exported_metric_names() -> dict[str, set[str]]:
    """The names the alerts need from each scrape job: {"portal": {...}, "messaging": {...}}.

    Names as the expressions select them, so a histogram appears as its `_bucket` series.
    The Erlang service's names all start with `messaging_`; every other one is Django's."""
    used = set().union(*alert_metric_names().values()) - PROMETHEUS_MADE
    return {
        "portal": {name for name in used if not name.startswith("messaging_")},
        "messaging": {name for name in used if name.startswith("messaging_")},
    }


def unit_tests() -> list[dict]:
    """Every alert_rule_test of alerts_test.yml, each with the `name` of its test group."""
    groups = yaml.safe_load(ALERTS_TEST_FILE.read_text())["tests"]
    return [{**case, "group": group.get("name", "")} for group in groups for case in group["alert_rule_test"]]


def runbook_anchor(alert_name: str) -> str:
    """MessagingServiceDown → messaging-service-down: the alert's section of docs/operations.md."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", alert_name).lower()
