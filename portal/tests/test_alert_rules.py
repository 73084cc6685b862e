"""The alert rules an operator is paged by (deploy/prometheus/alerts.yml) are complete: every
alert has a promtool unit test that fires it and one that keeps it quiet, a severity, a summary,
a description and a runbook section, and uses only the metric names the endpoints promise.

promtool itself runs the unit tests (`make test-alerts`); these tests check what promtool
cannot: that no alert was left without its cases or its runbook.
"""

import pytest

from testing.alert_rules import (
    MESSAGING_METRICS,
    PORTAL_METRICS,
    alert_metric_names,
    alert_rules,
    exported_metric_names,
    metric_names,
    runbook_anchor,
    unit_tests,
)

ALERT_NAMES = [rule["alert"] for rule in alert_rules()]


def test_alert_names_are_unique():
    assert len(ALERT_NAMES) == len(set(ALERT_NAMES))


@pytest.mark.parametrize("name", ALERT_NAMES)
def test_every_alert_has_a_firing_and_a_quiet_unit_test(name):
    cases = [case for case in unit_tests() if case["alertname"] == name]
    assert any(case.get("exp_alerts") for case in cases), f"no promtool case fires {name}"
    assert any(case.get("exp_alerts") == [] for case in cases), f"no promtool case keeps {name} quiet"


def test_every_unit_test_names_an_existing_alert():
    """A case for a misspelt alert would pass vacuously when it expects silence."""
    tested = {case["alertname"] for case in unit_tests()}
    assert tested <= set(ALERT_NAMES), f"cases for unknown alerts: {sorted(tested - set(ALERT_NAMES))}"


@pytest.mark.parametrize("rule", alert_rules(), ids=ALERT_NAMES)
def test_every_alert_says_how_urgent_what_and_where_the_runbook_is(rule):
    assert rule["labels"]["severity"] in {"page", "ticket"}
    annotations = rule["annotations"]
    assert annotations["summary"].strip() and annotations["description"].strip()
    assert annotations["runbook"] == f"docs/operations.md#{runbook_anchor(rule['alert'])}"


def test_runbook_anchors_are_the_alert_names_lowercase_and_hyphenated():
    assert runbook_anchor("MessagingServiceDown") == "messaging-service-down"
    assert runbook_anchor("JobFailures") == "job-failures"


def test_alerts_use_only_the_contract_metric_names():
    exported = exported_metric_names()
    assert exported["portal"] <= PORTAL_METRICS, exported["portal"] - PORTAL_METRICS
    assert exported["messaging"] <= MESSAGING_METRICS, exported["messaging"] - MESSAGING_METRICS


def test_each_alert_names_the_metrics_its_expression_reads():
    names = alert_metric_names()
    assert names["MessagingServiceDown"] == {"up"}
    assert names["MessagingClusterDegraded"] == {"messaging_cluster_members", "up"}
    assert names["AppServerNotReady"] == {"portal_ready", "up"}
    assert names["PortalSlowResponses"] == {"http_request_duration_seconds_bucket"}
    assert names["LedgerCheckFailing"] == {"ledger_check_ok", "ledger_check_last_run_timestamp_seconds"}
    assert names["JobFailures"] == {"jobs_failed_total"}
    assert names["PayoutStuckProcessing"] == {
        "payout_oldest_processing_age_seconds",
        "payout_stuck_after_seconds",
    }
    assert all(names.values()), "an alert whose expression reads no metric"


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('up{job="messaging"} == 0 or absent(up{job="messaging"})', {"up"}),
        ('sum by (job, le) (rate(a_bucket{le=~"0.5|1"}[5m])) > 0.5', {"a_bucket"}),
        ("a < on() group_left() count(b)", {"a", "b"}),
        ("max by (job) (a) > max by (job) (a offset 15m)", {"a"}),
        ("a > 2 * 1024 * 1e3 and ignoring(outcome) b[5m:1m]", {"a", "b"}),
        ('time() - c > 7200 unless d{x="by (y)"}', {"c", "d"}),
        ("histogram_quantile(0.99, sum(rate(h_bucket[5m])) by (le))", {"h_bucket"}),
    ],
)
def test_metric_names_of_an_expression(expr, expected):
    assert metric_names(expr) == expected
