from wagtail import hooks

from .viewsets import OperationsGroup


@hooks.register("register_admin_viewset")
def register_operations():
    return OperationsGroup()
