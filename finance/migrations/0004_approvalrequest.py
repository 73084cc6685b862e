"""The four-eyes model moves from portal to finance, every row kept.

The table was created by portal 0003 as portal_approvalrequest. This migration takes the
model into finance's state without touching the database, then renames the table and its
index to finance's names. portal 0005 removes the model from portal's state and moves the
permissions (content type, Permission rows and every group's grants) with it.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("finance", "0003_transaction_list_indexes"),
        ("portal", "0004_roles_portal_permissions"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ApprovalRequest",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("kind", models.CharField(choices=[("reversal", "Reversal"), ("withdrawal", "Withdrawal completion"), ("refund", "Refund")], max_length=12)),
                        ("status", models.CharField(choices=[("pending", "Pending"), ("approved", "Approved"), ("rejected", "Rejected"), ("failed", "Failed on execution")], default="pending", max_length=10)),
                        ("amount", models.DecimalField(decimal_places=4, max_digits=20)),
                        ("currency", models.CharField(max_length=3)),
                        ("reason", models.TextField(blank=True)),
                        ("decision_note", models.TextField(blank=True)),
                        ("idempotency_key", models.CharField(max_length=64, unique=True)),
                        ("result_reference", models.CharField(blank=True, max_length=32)),
                        ("created_at", models.DateTimeField(auto_now_add=True, db_index=True)),
                        ("decided_at", models.DateTimeField(blank=True, null=True)),
                        ("approved_by", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name="approval_requests_decided", to=settings.AUTH_USER_MODEL)),
                        ("booking", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="finance.booking")),
                        ("requested_by", models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="approval_requests_made", to=settings.AUTH_USER_MODEL)),
                        ("transaction", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="finance.wallettransaction")),
                        ("withdrawal", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="finance.withdrawal")),
                    ],
                    options={
                        "db_table": "portal_approvalrequest",
                        "ordering": ["created_at", "id"],
                        "permissions": [
                            ("approve_request", "Can approve money actions that need a second person"),
                            ("view_finance_dashboard", "Can open the finance dashboard"),
                        ],
                        "indexes": [models.Index(fields=["status", "created_at"], name="portal_appr_status_ef53d6_idx")],
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(("approved_by__isnull", True), models.Q(("approved_by", models.F("requested_by")), _negated=True), _connector="OR"),
                                name="approval_not_by_requester",
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        # Now a real rename: portal_approvalrequest -> finance_approvalrequest.
        migrations.AlterModelTable(name="approvalrequest", table=None),
        migrations.RenameIndex(
            model_name="approvalrequest", new_name="approval_status_created", old_name="portal_appr_status_ef53d6_idx"
        ),
    ]
