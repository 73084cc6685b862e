from django.core.management.base import BaseCommand

from finance.demo import DEMO_PASSWORD, EXTRA_GUESTS, EXTRA_HOSTS, GUESTS, MARKETS, STAFF


class Command(BaseCommand):
    help = "Print the demo logins created by seed_demo (demo only)."

    def handle(self, *args, **options):
        self.stdout.write(f"Demo logins (password for all: {DEMO_PASSWORD}):")
        for username, _, description in STAFF:
            self.stdout.write(f"  {username:<10} {description}  → /admin/")
        hosts = ", ".join(m[0] for m in MARKETS)
        self.stdout.write(f"  hosts:     {hosts}  → /statement/")
        self.stdout.write(f"  guests:    {', '.join(g[0] for g in GUESTS)}")
        self.stdout.write(
            f"  (and {EXTRA_HOSTS} more hosts and {EXTRA_GUESTS} more guests, such as the hosts' "
            "first.last names in the portal's lists, with the same password)"
        )
