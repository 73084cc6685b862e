from django.urls import path
from rest_framework.routers import DefaultRouter

from . import api

router = DefaultRouter()
router.include_root_view = False
router.register("conversations", api.ConversationViewSet, basename="conversation")

urlpatterns = [
    path("erlang/persist/", api.PersistView.as_view(), name="erlang-persist"),
    path("erlang/health/", api.ErlangHealthView.as_view(), name="erlang-health"),
    path(
        "erlang/broadcasts/<uuid:broadcast_id>/progress/",
        api.BroadcastProgressView.as_view(),
        name="erlang-broadcast-progress",
    ),
    path("ws-token/", api.WebSocketTokenView.as_view(), name="ws-token"),
    *router.urls,
]
