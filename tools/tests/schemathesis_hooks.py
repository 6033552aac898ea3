"""Schemathesis hooks for tools/tests/schemathesis.rs (loaded through SCHEMATHESIS_HOOKS).

JSON Schema cannot say that `start_time` must not be after `end_time` (a rule across two
parameters; spec/openapi.json states it in their descriptions). A schema-valid request
that breaks it gets the API's documented 400, which the positive_data_acceptance check
(ST202) would count as a failure. This hook drops exactly that failure, and only after
checking it: the response must be that 400 naming `start_time`, and the request's own
times must really be in the wrong order. Every other failure, of every check, stands.
"""

from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import schemathesis

# The error text of the rule, as tools/src/api/params.rs words it.
WINDOW_ERROR = "start_time is after end_time"


def parse_time(text):
    """An RFC 3339 date-time as a datetime; a leap second counts as second 59."""
    text = text.upper().replace(":60", ":59", 1)
    if "." in text:
        # Python reads at most 6 fraction digits; the API cuts to 3 anyway.
        head, rest = text.split(".", 1)
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def window_is_reversed(case):
    query = case.query or {}
    start, end = query.get("start_time"), query.get("end_time")
    if not isinstance(start, str) or not isinstance(end, str):
        return False
    try:
        return parse_time(start) > parse_time(end)
    except ValueError:
        return False


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if failure.code != "ST202" or response.status_code != 400:
        return True
    try:
        body = response.json()
    except ValueError:
        return True
    documented = body.get("param") == "start_time" and body.get("error") == WINDOW_ERROR
    # The request as sent, should the case's query differ from it.
    sent = parse_qs(urlsplit(response.request.url).query)
    sent_reversed = False
    if "start_time" in sent and "end_time" in sent:
        try:
            sent_reversed = parse_time(sent["start_time"][0]) > parse_time(sent["end_time"][0])
        except ValueError:
            sent_reversed = False
    return not (documented and (window_is_reversed(case) or sent_reversed))
