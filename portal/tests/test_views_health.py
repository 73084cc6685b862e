"""GET /health/live/: what a load balancer asks each app server directly."""

import pytest


def test_live_answers_without_touching_the_database(client):
    # No database fixture: any query the view (or its middleware) made would fail the test.
    response = client.get("/health/live/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_other_methods_get_a_json_refusal(client, method):
    response = getattr(client, method)("/health/live/")

    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert response.json()["error"]["code"] == "method_not_allowed"
