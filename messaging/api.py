"""Messaging endpoints: conversations for users, and the callbacks the Erlang service makes.

Erlang → Django calls authenticate with `X-Messaging-Token: <MESSAGING_SHARED_SECRET>`,
compared in constant time; they carry no user. While the secret rotates, its previous value
(MESSAGING_SHARED_SECRET_PREVIOUS) is accepted too: nodes not restarted yet still send it.
"""

import hmac

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.authentication import BaseAuthentication
from rest_framework.decorators import action
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from . import services
from .erlang import ErlangError, erlang_client, issue_websocket_token, websocket_url
from .models import Conversation, Message, Priority

MAX_PERSIST_BATCH = 5000
HEADER = "X-Messaging-Token"


class ErlangService:
    """The authenticated party of an Erlang callback (not a user)."""

    is_authenticated = True
    pk = None


def is_shared_secret(given: str) -> bool:
    """The current secret or, while it rotates, the previous one; each compared in constant time."""
    accepted = [settings.MESSAGING_SHARED_SECRET, settings.MESSAGING_SHARED_SECRET_PREVIOUS]
    # A list, not a generator: both are compared whichever matches, so timing tells nothing.
    return any([hmac.compare_digest(given.encode(), secret.encode()) for secret in accepted if secret])


class MessagingTokenAuthentication(BaseAuthentication):
    def authenticate(self, request):
        given = request.headers.get(HEADER)
        if given is None:
            return None
        if not is_shared_secret(given):
            raise exceptions.AuthenticationFailed(f"Wrong {HEADER}.")
        return ErlangService(), "erlang"

    def authenticate_header(self, request):
        return HEADER


class MessagingTokenScheme(OpenApiAuthenticationExtension):
    """The Erlang service's shared-secret header, as an API key in the OpenAPI schema."""

    target_class = MessagingTokenAuthentication
    name = "messagingToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": HEADER}


class IsErlangService(BasePermission):
    def has_permission(self, request, view):
        return request.auth == "erlang"


class ErlangCallbackView(APIView):
    authentication_classes = [MessagingTokenAuthentication]
    permission_classes = [IsErlangService]


class EscapedJSONRenderer(JSONRenderer):
    """JSON with every non-ASCII character escaped (\\uXXXX). The persistence answer names each
    message by its id as given, and an id may hold a lone surrogate, which UTF-8 cannot encode:
    escaped, it goes back exactly as it came, and the answer cannot fail."""

    ensure_ascii = True


class PersistView(ErlangCallbackView):
    renderer_classes = [EscapedJSONRenderer]

    @extend_schema(tags=["messaging (Erlang callbacks)"], responses={200: dict})
    def get(self, request):
        """The Erlang service's reachability probe: answers once the shared secret is right."""
        return Response({"status": "ok"})

    @extend_schema(
        tags=["messaging (Erlang callbacks)"],
        request=inline_serializer("PersistBatch", {"messages": serializers.ListField(child=serializers.DictField())}),
        responses={
            200: inline_serializer(
                "PersistResult",
                {
                    "stored": serializers.ListField(child=serializers.CharField()),
                    "duplicates": serializers.ListField(child=serializers.CharField()),
                    "rejected": serializers.ListField(
                        child=inline_serializer(
                            "PersistRejection", {"id": serializers.CharField(), "error": serializers.CharField()}
                        )
                    ),
                },
            )
        },
    )
    def post(self, request):
        """Store a batch of messages by UUID; a replayed batch stores nothing twice.

        Each message is stored, a duplicate, or rejected with a reason (and kept as a dead
        letter): one message never fails the batch. Only a malformed batch answers 400."""
        items = request.data.get("messages") if isinstance(request.data, dict) else None
        if not isinstance(items, list):
            raise serializers.ValidationError({"messages": ["A list of messages is required."]})
        if len(items) > MAX_PERSIST_BATCH:
            raise serializers.ValidationError({"messages": [f"At most {MAX_PERSIST_BATCH} messages per batch."]})
        return Response(services.persist_messages(items))


class ProgressSerializer(serializers.Serializer):
    delivered = serializers.IntegerField(min_value=0)
    total = serializers.IntegerField(min_value=0)
    status = serializers.ChoiceField(choices=["sending", "done"])
    # Of the delivered, how many had a connected session (older services do not send it).
    online = serializers.IntegerField(min_value=0, required=False, default=0)


class BroadcastProgressView(ErlangCallbackView):
    @extend_schema(
        tags=["messaging (Erlang callbacks)"], request=ProgressSerializer, responses={200: ProgressSerializer}
    )
    def post(self, request, broadcast_id):
        body = ProgressSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        broadcast = services.record_broadcast_progress(broadcast_id, **body.validated_data)
        if broadcast is None:
            raise exceptions.NotFound("No such broadcast.")
        return Response(
            {
                "delivered": broadcast.delivered,
                "total": broadcast.total,
                "status": broadcast.status,
                "online": broadcast.delivered_online,
            }
        )


class ErlangHealthView(APIView):
    """For monitoring: is the Erlang service up? Anyone may ask, so the answer is a status
    only: no URL, node name or error text (the client logs those)."""

    authentication_classes = []
    permission_classes = []

    @extend_schema(tags=["messaging"], responses={200: dict})
    def get(self, request):
        try:
            reachable = erlang_client.health().get("status") == "ok"
        except ErlangError:
            reachable = False
        return Response({"status": "ok" if reachable else "degraded", "erlang": {"reachable": reachable}})


class WebSocketTokenView(APIView):
    @extend_schema(
        tags=["messaging"],
        responses={
            200: inline_serializer(
                "WebSocketToken",
                {
                    "token": serializers.CharField(),
                    "url": serializers.CharField(),
                    "expires_in": serializers.IntegerField(help_text="Seconds the token lives, at least."),
                    "expires_at": serializers.IntegerField(help_text="Unix time the token stops being accepted."),
                },
            )
        },
    )
    def get(self, request):
        """A token for the Erlang WebSocket, for the signed-in user (any role), living WS_TOKEN_TTL_SECONDS.

        Pages fetch a fresh one to open a connection and, before it expires, to renew their
        session (`{"type": "auth", "token": ...}` on the socket)."""
        issued = issue_websocket_token(request.user.pk)
        response = Response(
            {
                "token": issued.token,
                "url": websocket_url(),
                "expires_in": issued.expires_in,
                "expires_at": issued.expires_at,
            }
        )
        response["Cache-Control"] = "no-store"  # a credential: never kept by a cache
        return response


# --- conversations ---------------------------------------------------------------------------


class MessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Message
        fields = ["id", "conversation", "sender", "receiver", "text", "priority", "created_at", "read_at", "via"]


class NewMessageSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=services.MAX_TEXT)
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.NORMAL)


class ConversationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Conversation
        fields = ["id", "subject", "participants", "created_at"]


@extend_schema(tags=["messaging"])
class ConversationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = ConversationSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no user
            return Conversation.objects.none()
        # Participants only: anyone else's conversation answers 404.
        return Conversation.objects.filter(participants=self.request.user).prefetch_related("participants")

    @extend_schema(
        methods=["GET"],
        responses={200: MessageSerializer(many=True)},
        request=None,
        operation_id="conversation_messages",
    )
    @extend_schema(
        methods=["POST"],
        request=NewMessageSerializer,
        responses={
            201: inline_serializer(
                "MessageAccepted",
                {"id": serializers.UUIDField(), "status": serializers.CharField(), "via": serializers.CharField()},
            )
        },
        operation_id="conversation_send_message",
    )
    @action(detail=True, methods=["get", "post"])
    def messages(self, request, pk=None):
        conversation = self.get_object()
        if request.method == "GET":
            page = self.paginate_queryset(conversation.messages.order_by("created_at"))
            return self.get_paginated_response(MessageSerializer(page, many=True).data)
        body = NewMessageSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        sent = services.send_message(
            conversation, request.user, body.validated_data["text"], body.validated_data["priority"]
        )
        return Response(sent, status=status.HTTP_201_CREATED)
