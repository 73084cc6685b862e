"""The ledger's postings as PL/pgSQL functions, one per kind of movement (PostgreSQL only).

Why functions: a posting is one round trip, and its statements are planned once per
server session, not once per call. The ledger used to get that from SQL PREPARE/EXECUTE,
but a prepared statement lives in one server session, and PgBouncer in transaction mode
hands each transaction whichever server session is free, so EXECUTE met sessions that had
never seen the PREPARE. PL/pgSQL caches the plans of a function's statements in whichever
session runs it: every server session builds its own cache, so nothing has to follow the
client from session to session. `SELECT * FROM finance_post_...(...)` is one plain statement.

`finance_post_movement` is the core every kind calls: it checks and updates the wallet (one
conditional UPDATE: active, available never negative; it is also the row lock), writes or
settles the transaction header, the journal legs and the audit row. A refused posting
returns a row of NULLs having written nothing; Python then reads the wallet to say why.
The kind functions add the rows of other tables the kind updates (payment, booking,
withdrawal, original transaction) in the same call. finance/ledger.py builds the calls;
the step-by-step path there does the same on SQLite, and finance/tests/test_services.py
runs every test through both paths.

The SQL is spelled out here, frozen with the migration: a later change is a new migration
with CREATE OR REPLACE FUNCTION.
"""

from django.db import migrations

# The arguments every posting function takes first, in this order (ledger.py: _core_args).
CORE_PARAMS = """
    p_wallet_id bigint, p_balance_delta numeric, p_held_delta numeric,
    p_accounts text[], p_amounts numeric[],
    p_settle_id bigint, p_reference text, p_type text, p_status text, p_direction text, p_amount numeric,
    p_reverses_id bigint, p_booking_id bigint, p_description text, p_metadata jsonb,
    p_action text, p_actor_id bigint, p_reason text, p_now timestamptz"""
CORE_ARGS = """
    p_wallet_id, p_balance_delta, p_held_delta, p_accounts, p_amounts, p_settle_id, p_reference, p_type,
    p_status, p_direction, p_amount, p_reverses_id, p_booking_id, p_description, p_metadata, p_action,
    p_actor_id, p_reason, p_now"""
# What every posting function returns: the transaction's id and the wallet as updated.
RESULT = """
    OUT posted_txn_id bigint, OUT posted_wallet_id bigint, OUT posted_user_id bigint, OUT posted_currency text,
    OUT posted_balance numeric, OUT posted_held numeric"""
RESULT_VARS = "posted_txn_id, posted_wallet_id, posted_user_id, posted_currency, posted_balance, posted_held"
CALL_CORE = f"SELECT * INTO {RESULT_VARS} FROM finance_post_movement({CORE_ARGS});"

POST_MOVEMENT = f"""
CREATE FUNCTION finance_post_movement({CORE_PARAMS}, {RESULT}) LANGUAGE plpgsql AS $$
BEGIN
    UPDATE finance_wallet AS w
       SET balance = w.balance + p_balance_delta, held_balance = w.held_balance + p_held_delta, updated_at = p_now
     WHERE w.id = p_wallet_id AND w.status = 'active'
       AND w.balance + p_balance_delta >= w.held_balance + p_held_delta AND w.held_balance + p_held_delta >= 0
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
END $$;
"""

# A reversal marks the transaction it compensates as reversed.
POST_REVERSAL = f"""
CREATE FUNCTION finance_post_reversal({CORE_PARAMS}, p_original_id bigint, {RESULT}) LANGUAGE plpgsql AS $$
BEGIN
    {CALL_CORE}
    IF posted_txn_id IS NOT NULL THEN
        UPDATE finance_wallettransaction SET status = 'reversed', updated_at = p_now WHERE id = p_original_id;
    END IF;
END $$;
"""

# A refund records what is refunded on the payment; a full refund also marks the booking.
POST_REFUND = f"""
CREATE FUNCTION finance_post_refund({CORE_PARAMS}, p_payment_id bigint, p_refunded_amount numeric,
        p_commission_refunded numeric, p_payment_status text, p_booking_status text, {RESULT})
LANGUAGE plpgsql AS $$
BEGIN
    {CALL_CORE}
    IF posted_txn_id IS NULL THEN
        RETURN;
    END IF;
    UPDATE finance_payment
       SET refunded_amount = p_refunded_amount, commission_refunded = p_commission_refunded,
           status = p_payment_status, updated_at = p_now
     WHERE id = p_payment_id;
    IF p_booking_status IS NOT NULL THEN
        UPDATE finance_booking SET status = p_booking_status WHERE id = p_booking_id;
    END IF;
END $$;
"""

# Completing or failing a withdrawal settles its pending transaction and records the outcome.
SETTLE_WITHDRAWAL = f"""
CREATE FUNCTION finance_settle_withdrawal({CORE_PARAMS}, p_withdrawal_id bigint, p_withdrawal_status text,
        p_failure_reason text, p_processed_by_id bigint, p_processed_at timestamptz, {RESULT})
LANGUAGE plpgsql AS $$
BEGIN
    {CALL_CORE}
    IF posted_txn_id IS NOT NULL THEN
        UPDATE finance_withdrawal
           SET status = p_withdrawal_status, failure_reason = p_failure_reason,
               processed_by_id = p_processed_by_id, processed_at = p_processed_at
         WHERE id = p_withdrawal_id;
    END IF;
END $$;
"""

# A booking payout applies the payment and confirms a pending booking.
POST_PAYOUT = f"""
CREATE FUNCTION finance_post_payout({CORE_PARAMS}, p_payment_id bigint, {RESULT}) LANGUAGE plpgsql AS $$
BEGIN
    {CALL_CORE}
    IF posted_txn_id IS NULL THEN
        RETURN;
    END IF;
    UPDATE finance_payment SET status = 'success', ledger_transaction_id = posted_txn_id, updated_at = p_now
     WHERE id = p_payment_id;
    UPDATE finance_booking SET status = 'confirmed' WHERE id = p_booking_id AND status = 'pending';
END $$;
"""

# The optimistic payout (ledger.payout_guard): under the payment's row lock, the payment is
# this booking's, not yet applied, pending or successful, for the booking's total in its
# currency, and the booking still has the total and commission the caller read. Then the
# payout goes to the host's wallet in that currency. Anything else: NULLs, nothing written.
POST_PAYOUT_GUARDED = f"""
CREATE FUNCTION finance_post_payout_guarded({CORE_PARAMS}, p_payment_id bigint, p_payment_reference text,
        p_provider text, p_payment_amount numeric, p_payment_currency text, p_grand_total numeric,
        p_commission_fee numeric, p_booking_currency text, {RESULT})
LANGUAGE plpgsql AS $$
DECLARE
    host_user_id bigint;
BEGIN
    SELECT pr.host_id INTO host_user_id
      FROM finance_payment p
      JOIN finance_booking b ON b.id = p.booking_id
      JOIN finance_property pr ON pr.id = b.rental_property_id
     WHERE p.id = p_payment_id AND p.booking_id = p_booking_id AND p.reference = p_payment_reference
       AND p.provider = p_provider AND p.ledger_transaction_id IS NULL AND p.status IN ('pending', 'success')
       AND p.amount = p_payment_amount AND p.currency = p_payment_currency
       AND b.grand_total = p_grand_total AND b.commission_fee = p_commission_fee AND b.currency = p_booking_currency
       FOR UPDATE OF p;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT w.id INTO p_wallet_id FROM finance_wallet w WHERE w.user_id = host_user_id AND w.currency = p_booking_currency;
    IF NOT FOUND THEN
        RETURN;  -- the host has no wallet in this currency yet: the careful path creates it
    END IF;
    SELECT * INTO {RESULT_VARS} FROM finance_post_payout({CORE_ARGS}, p_payment_id);
END $$;
"""

FUNCTIONS = {
    "finance_post_movement": POST_MOVEMENT,
    "finance_post_reversal": POST_REVERSAL,
    "finance_post_refund": POST_REFUND,
    "finance_settle_withdrawal": SETTLE_WITHDRAWAL,
    "finance_post_payout": POST_PAYOUT,
    "finance_post_payout_guarded": POST_PAYOUT_GUARDED,
}


class RunSQLOnPostgreSQL(migrations.RunSQL):
    """RunSQL that does nothing on other databases (SQLite posts step by step, in Python)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):
    dependencies = [("finance", "0004_approvalrequest")]

    # Unapplied in reverse order: the kind functions call finance_post_movement.
    operations = [
        RunSQLOnPostgreSQL(sql=create, reverse_sql=f"DROP FUNCTION {name}")
        for name, create in FUNCTIONS.items()
    ]
