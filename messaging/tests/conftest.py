import pytest
from django.conf import settings as django_settings

from messaging.models import Conversation
from testing.erlang_node import ErlangNode


@pytest.fixture(scope="session")
def erlang_node(live_server):
    """One real Erlang node for the session, persisting into the live test server."""
    node = ErlangNode(
        django_url=live_server.url, secret=django_settings.MESSAGING_SHARED_SECRET, MESSAGE_QUEUE_MAX_SIZE=50
    ).start()
    yield node
    node.cleanup()


@pytest.fixture
def messaging_settings(settings, erlang_node):
    settings.ERLANG_MESSAGING_URL = erlang_node.url
    return settings


@pytest.fixture
def conversation(host, guest):
    """A conversation between the host and the guest."""
    conversation = Conversation.objects.create(subject="Check-in time")
    conversation.participants.add(host, guest)
    return conversation
