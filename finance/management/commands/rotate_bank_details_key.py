from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from finance import crypto
from finance.errors import BankDetailsKeyError
from finance.models import BankAccount


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored account number under the current BANK_DETAILS_KEY (numbers stored "
        "under BANK_DETAILS_KEY_PREVIOUS included), in batches. Safe to run again: numbers already "
        "under the current key are left alone. Afterwards BANK_DETAILS_KEY_PREVIOUS is no longer needed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500, help="Accounts per transaction (default 500).")

    def handle(self, *args, batch_size: int, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        crypto.keys()  # refuses at once when no key is configured
        rotated = current = 0
        unreadable: list[int] = []
        after = 0
        while True:
            with transaction.atomic():
                batch = list(
                    BankAccount.objects.select_for_update()
                    .exclude(account_number_encrypted="")
                    .filter(pk__gt=after)
                    .order_by("pk")
                    .only("pk", "account_number_encrypted")[:batch_size]
                )
                if not batch:
                    break
                after = batch[-1].pk
                changed = []
                for account in batch:
                    if crypto.is_current(account.account_number_encrypted):
                        current += 1
                        continue
                    try:
                        account.account_number_encrypted = crypto.rotate_token(account.account_number_encrypted)
                    except BankDetailsKeyError:
                        unreadable.append(account.pk)
                        continue
                    changed.append(account)
                BankAccount.objects.bulk_update(changed, ["account_number_encrypted"])
                rotated += len(changed)
        self.stdout.write(
            f"Re-encrypted {rotated} account number(s) under the current BANK_DETAILS_KEY; {current} already were."
        )
        if unreadable:
            shown = ", ".join(str(pk) for pk in unreadable[:20]) + (" …" if len(unreadable) > 20 else "")
            raise CommandError(
                f"{len(unreadable)} account number(s) decrypt with neither BANK_DETAILS_KEY nor "
                f"BANK_DETAILS_KEY_PREVIOUS (bank accounts {shown}): keep BANK_DETAILS_KEY_PREVIOUS until "
                "they are re-entered or their key is found."
            )
