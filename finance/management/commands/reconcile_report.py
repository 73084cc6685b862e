"""Reconcile a provider's report from the command line: a CSV file, or a day through the API.

    manage.py reconcile_report --provider paystack --file export.csv --user finance1
    manage.py reconcile_report --provider stripe --day 2026-03-02

A file is read as finance reads an upload (the user needs finance.reconcile, and is audited);
a day is fetched as the periodic job fetches it. Prints the report's counts; exits non-zero
when the file is refused or the provider does not answer.
"""

from datetime import date
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from finance.errors import TransactionError
from finance.models import ReconciliationLine
from finance.reconciliation import MAPPINGS, import_report
from finance.reconciliation.fetch import FETCHERS, fetch_day


class Command(BaseCommand):
    help = "Reconcile a provider's report: a CSV file (--file, --user) or a day fetched through its API (--day)."

    def add_arguments(self, parser):
        parser.add_argument("--provider", required=True, choices=sorted(MAPPINGS))
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--file", type=Path, help="The provider's CSV report.")
        source.add_argument("--day", type=date.fromisoformat, help="A UTC day (YYYY-MM-DD) to fetch through the API.")
        parser.add_argument("--user", help="Username of the finance person the upload is recorded as (with --file).")

    def handle(self, *args, provider, file, day, user, **options):
        try:
            if file is not None:
                report = import_report(
                    provider=provider, file_name=file.name, content=file.read_bytes(), actor=self.actor(user)
                )
            else:
                if provider not in FETCHERS:
                    raise CommandError(f"{provider} has no API that lists its transactions: use --file.")
                report = fetch_day(provider, day)
        except TransactionError as error:
            raise CommandError(error.message) from None
        except OSError as error:
            raise CommandError(str(error)) from None
        if getattr(report, "duplicate", False):
            self.stdout.write(f"This file was already read as report {report.pk} ({report}).")
        counts = {state.label: report.lines.filter(state=state).count() for state in ReconciliationLine.State}
        self.stdout.write(f"Report {report.pk}: {report} · {report.line_count} lines")
        for label, count in counts.items():
            self.stdout.write(f"  {label}: {count}")

    def actor(self, username):
        if not username:
            raise CommandError("--user is required with --file: the upload is recorded as that person's.")
        actor = get_user_model().objects.filter(username=username).first()
        if actor is None:
            raise CommandError(f"No user {username!r}.")
        return actor
