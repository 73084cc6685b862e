"""`manage.py replay_dead_letters`: store undeliverable messages again once their cause is fixed.

The operator picks them by id (the portal's "Undeliverable messages" page lists them), by
reason, or all; each is sent through the same checks as the messaging service's batches.
"""

from django.core.management.base import BaseCommand, CommandError

from messaging.models import DeadLetterMessage
from messaging.services import REJECTED, replay_dead_letter


class Command(BaseCommand):
    help = "Replay dead-lettered messages: store each again if it can be stored now."

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="*", type=int, help="Dead letters' ids (the page's row ids).")
        parser.add_argument("--reason", help="Every dead letter with exactly this reason.")
        parser.add_argument("--all", action="store_true", help="Every dead letter.")

    def handle(self, *, ids, reason, all, **options):
        if not (ids or reason or all):
            raise CommandError("Name the dead letters to replay: their ids, --reason TEXT or --all.")
        chosen = DeadLetterMessage.objects.order_by("id")
        if ids:
            chosen = chosen.filter(pk__in=ids)
            missing = sorted(set(ids) - set(chosen.values_list("pk", flat=True)))
            if missing:
                raise CommandError(f"No dead letter has the id {', '.join(map(str, missing))}.")
        if reason:
            chosen = chosen.filter(reason=reason)
        outcomes = {}
        for dead_letter in chosen:
            outcome = replay_dead_letter(dead_letter)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            self.stdout.write(f"{dead_letter.pk} {dead_letter.message_id}: {outcome}")
        summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items())) or "nothing to replay"
        self.stdout.write(f"Replayed: {summary}.")
        if outcomes.get(REJECTED):
            raise CommandError(f"{outcomes[REJECTED]} still refused: their reasons are on the page.")
