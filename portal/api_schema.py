"""What the published OpenAPI schema covers: this project's own API under /api/.

Wagtail mounts its admin's internal API (/admin/api/...) in the same URLconf; it is not
ours to publish, and drf-spectacular cannot describe it without a request.
"""


def only_our_api(endpoints):
    """drf-spectacular preprocessing hook: keep the endpoints under /api/."""
    return [endpoint for endpoint in endpoints if endpoint[0].startswith("/api/")]
