from wagtail import hooks

from .services import ACTIONS
from .viewsets import OperationsGroup


@hooks.register("register_admin_viewset")
def register_operations():
    return OperationsGroup()


@hooks.register("register_log_actions")
def register_operations_log_actions(actions):
    for code, (label, message) in ACTIONS.items():
        actions.register_action(code, label, message)
