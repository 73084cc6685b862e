from django.core.management.base import BaseCommand, CommandError

from finance.ledger_checks import run_ledger_checks


class Command(BaseCommand):
    help = "Check every ledger invariant over the whole database; exit non-zero on a violation."

    def handle(self, *args, **options):
        results = run_ledger_checks()
        for result in results:
            mark = self.style.SUCCESS("ok  ") if result.ok else self.style.ERROR("FAIL")
            self.stdout.write(f"{mark} {result.description}")
            for line in result.violations:
                self.stdout.write(f"       - {line}")
            if result.violation_count > len(result.violations):
                self.stdout.write(f"       ... and {result.violation_count - len(result.violations)} more")
        failed = [r for r in results if not r.ok]
        if failed:
            total = sum(r.violation_count for r in failed)
            raise CommandError(f"{total} ledger violation(s) in {len(failed)} of {len(results)} checks.")
        self.stdout.write(self.style.SUCCESS(f"Ledger healthy: {len(results)} checks passed."))
