"""The runbook (docs/operations.md) stays true to the repository: every alert's `runbook`
link lands on a section, every link inside it lands, and every test it names exists."""

import re
from pathlib import Path

import pytest

from testing.alert_rules import alert_rules, runbook_anchor

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "operations.md"


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lowercase, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors() -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {github_anchor(heading) for heading in headings}


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_has_its_section(rule):
    assert runbook_anchor(rule["alert"]) in anchors()


def test_every_link_inside_the_runbook_lands_on_a_section():
    links = set(re.findall(r"\]\(#([^)]+)\)", RUNBOOK.read_text()))
    assert links and not links - anchors(), sorted(links - anchors())


def test_every_test_the_runbook_names_exists():
    named = set(
        re.findall(
            r"`((?:e2e|finance|messaging|portal|jobs|erlang_messaging)/[\w/]+(?:\.py|\.erl|/))`", RUNBOOK.read_text()
        )
    )
    assert named
    assert not [path for path in named if not (ROOT / path).exists()]
