"""Staff roles: Django groups and the permissions each holds.

Applied by a migration (and again by later migrations that add permissions), so a fresh
database always has the roles. Hosts and guests belong to no group.
"""

ACCESS_ADMIN = "wagtailadmin.access_admin"

ROLE_PERMISSIONS = {
    "Finance": [
        ACCESS_ADMIN,
        "finance.view_wallet",
        "finance.view_wallettransaction",
        "finance.view_withdrawal",
        "finance.view_booking",
        "finance.view_payment",
        "finance.complete_withdrawal",
        "finance.fail_withdrawal",
        "finance.refund_booking",
        "finance.reverse_transaction",
        "finance.view_finance_dashboard",
        "finance.view_approvalrequest",
        "finance.replay_webhookevent",
        "finance.view_webhookevent",
        "finance.retry_refund",
        "finance.reconcile",
        "finance.view_reconciliationreport",
        "jobs.view_jobrecord",
        "jobs.retry_job",
    ],
    "Finance approver": [
        ACCESS_ADMIN,
        "finance.view_wallet",
        "finance.view_wallettransaction",
        "finance.view_withdrawal",
        "finance.view_booking",
        "finance.view_payment",
        "finance.view_finance_dashboard",
        "finance.view_approvalrequest",
        "finance.approve_request",
    ],
    "Support": [
        ACCESS_ADMIN,
        "messaging.send_broadcast",
        "messaging.view_broadcast",
        "messaging.view_messaging_stats",
        "messaging.view_deadlettermessage",
        "jobs.view_jobrecord",
        "jobs.retry_job",
    ],
    "Manager": [
        ACCESS_ADMIN,
        "finance.view_wallet",
        "finance.view_wallettransaction",
        "finance.view_withdrawal",
        "finance.view_booking",
        "finance.view_payment",
        "finance.view_ledgeraudit",
        "finance.view_webhookevent",
        "finance.view_finance_dashboard",
        "finance.view_approvalrequest",
        "finance.view_reconciliationreport",
        "portal.view_audit_log",
        "messaging.view_messaging_stats",
        "messaging.view_deadlettermessage",
        "messaging.view_broadcast",
        "jobs.view_jobrecord",
    ],
}


def apply_roles(apps, schema_editor=None, roles=ROLE_PERMISSIONS):
    """Create the groups and grant their permissions (only the ones that exist yet)."""
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codes in roles.items():
        group, _ = Group.objects.get_or_create(name=name)
        for code in codes:
            app_label, codename = code.split(".")
            permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if permission is not None:
                group.permissions.add(permission)


def revoke_roles(apps, schema_editor=None, roles=ROLE_PERMISSIONS):
    """Take the grants in `roles` away again (migrating back); the permission rows stay."""
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codes in roles.items():
        for code in codes:
            app_label, codename = code.split(".")
            permissions = Permission.objects.filter(content_type__app_label=app_label, codename=codename)
            for group in Group.objects.filter(name=name):
                group.permissions.remove(*permissions)
