"""Pagination of the API's lists: `page` is what the schema says it is, one page number."""

from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination


class PageNumberOnly(PageNumberPagination):
    """DRF's page-number pagination, except that a `page` parameter that is given must be one
    page number: an empty, repeated or named one ("last") is refused like any invalid page
    (404), where DRF would quietly serve page 1 or the last page."""

    last_page_strings = ()

    def get_page_number(self, request, paginator):
        values = request.query_params.getlist(self.page_query_param)
        if not values:
            return 1
        if len(values) > 1 or not values[0]:
            raise NotFound(self.invalid_page_message.format(page_number=values[-1], message="one page number"))
        return values[0]
