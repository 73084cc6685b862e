"""Negative host balances (issue 18): a refund may take a wallet's available balance below zero,
and the negative part is a receivable the host's next movements recover.

finance_post_movement (migration 0005) is replaced, same signature, with two changes:
- its wallet UPDATE lets a refund take available (balance − held) below zero, and lets any
  movement that does not lower available (a payout, a credit, a released or settled hold)
  through while the wallet stays negative; every other movement keeps the old rule;
- after the posting it keeps the receivables in step with the wallet's debt, max(0, held −
  balance): a debt that grew is a new HostReceivable on this transaction; one that shrank is
  recovered from the wallet's open receivables, oldest first, one ReceivableRecovery per
  receivable touched. The UPDATE holds the wallet's row lock, which is what serialises every
  change to that wallet's receivables. When the wallet is not and was not negative this adds
  arithmetic only, no statement (the booking payout's hot path).
finance/ledger.py's step-by-step path does the same in Python.

The CHECK wallet_available_not_negative goes; wallet_held_not_negative stays. Unapplying this
restores 0005's function and the CHECK (which fails while a wallet is negative).
"""

import importlib

from django.db import migrations, models

ledger_functions = importlib.import_module("finance.migrations.0005_ledger_functions")

POST_MOVEMENT = f"""
CREATE OR REPLACE FUNCTION finance_post_movement({ledger_functions.CORE_PARAMS}, {ledger_functions.RESULT})
LANGUAGE plpgsql AS $$
DECLARE
    debt_before numeric;
    debt_after numeric;
    to_recover numeric;
    taken numeric;
    open_receivable record;
BEGIN
    UPDATE finance_wallet AS w
       SET balance = w.balance + p_balance_delta, held_balance = w.held_balance + p_held_delta, updated_at = p_now
     WHERE w.id = p_wallet_id AND w.status = 'active' AND w.held_balance + p_held_delta >= 0
       AND (w.balance + p_balance_delta >= w.held_balance + p_held_delta
            OR p_balance_delta - p_held_delta >= 0
            OR p_type = 'refund')
    RETURNING w.id, w.user_id, w.currency, w.balance, w.held_balance
         INTO posted_wallet_id, posted_user_id, posted_currency, posted_balance, posted_held;
    IF NOT FOUND THEN
        RETURN;  -- refused: nothing written, every column NULL
    END IF;
    IF p_settle_id IS NULL THEN
        INSERT INTO finance_wallettransaction (reference, wallet_id, type, status, direction, amount, currency,
               balance_after, reverses_id, booking_id, description, metadata, created_at, updated_at)
        VALUES (p_reference, posted_wallet_id, p_type, p_status, p_direction, p_amount, posted_currency,
               posted_balance, p_reverses_id, p_booking_id, p_description, p_metadata, p_now, p_now)
        RETURNING id INTO posted_txn_id;
    ELSE
        UPDATE finance_wallettransaction
           SET status = p_status, balance_after = posted_balance, metadata = p_metadata, updated_at = p_now
         WHERE id = p_settle_id
        RETURNING id INTO posted_txn_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'finance_post_movement: no transaction % to settle', p_settle_id;
        END IF;
    END IF;
    -- One row per leg; an empty account stands for the wallet's own leg.
    INSERT INTO finance_ledgerentry (transaction_id, wallet_id, system_account, currency, amount, created_at)
    SELECT posted_txn_id, CASE WHEN leg.account = '' THEN posted_wallet_id END, leg.account, posted_currency,
           leg.amount, p_now
      FROM unnest(p_accounts, p_amounts) AS leg(account, amount);
    INSERT INTO finance_ledgeraudit (created_at, actor_id, action, wallet_id, transaction_id, amount, currency,
           reason, balance_before, balance_after, held_before, held_after, metadata)
    VALUES (p_now, p_actor_id, p_action, posted_wallet_id, posted_txn_id, p_amount, posted_currency, p_reason,
           posted_balance - p_balance_delta, posted_balance, posted_held - p_held_delta, posted_held, '{{}}');
    -- The wallet's debt before and after: what it is negative by.
    debt_before := GREATEST(0, (posted_held - p_held_delta) - (posted_balance - p_balance_delta));
    debt_after := GREATEST(0, posted_held - posted_balance);
    IF debt_after > debt_before THEN
        INSERT INTO finance_hostreceivable (wallet_id, transaction_id, currency, amount, recovered, created_at)
        VALUES (posted_wallet_id, posted_txn_id, posted_currency, debt_after - debt_before, 0, p_now);
    ELSIF debt_after < debt_before THEN
        to_recover := debt_before - debt_after;
        FOR open_receivable IN
            SELECT r.id, r.amount - r.recovered AS outstanding FROM finance_hostreceivable r
             WHERE r.wallet_id = posted_wallet_id AND r.recovered < r.amount ORDER BY r.id
        LOOP
            EXIT WHEN to_recover <= 0;
            taken := LEAST(to_recover, open_receivable.outstanding);
            UPDATE finance_hostreceivable
               SET recovered = recovered + taken,
                   recovered_at = CASE WHEN recovered + taken = amount THEN p_now END
             WHERE id = open_receivable.id;
            INSERT INTO finance_receivablerecovery (receivable_id, transaction_id, amount, created_at)
            VALUES (open_receivable.id, posted_txn_id, taken, p_now);
            to_recover := to_recover - taken;
        END LOOP;
    END IF;
END $$;
"""

# 0005's function as it was, to restore when this migration is unapplied.
POST_MOVEMENT_0005 = ledger_functions.POST_MOVEMENT.replace(
    "CREATE FUNCTION finance_post_movement", "CREATE OR REPLACE FUNCTION finance_post_movement", 1
)


class Migration(migrations.Migration):
    dependencies = [("finance", "0018_refunds_receivables_reconciliation")]

    operations = [
        migrations.RemoveConstraint(model_name="wallet", name="wallet_available_not_negative"),
        ledger_functions.RunSQLOnPostgreSQL(sql=POST_MOVEMENT, reverse_sql=POST_MOVEMENT_0005),
    ]
