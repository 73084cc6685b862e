from wagtail import hooks

from .audit_events import ACTIONS
from .viewsets import OperationsGroup


@hooks.register("register_admin_viewset")
def register_operations():
    return OperationsGroup()


@hooks.register("register_log_actions")
def register_audit_event_codes(actions):
    for code, (label, message) in ACTIONS.items():
        actions.register_action(code, label, message)
