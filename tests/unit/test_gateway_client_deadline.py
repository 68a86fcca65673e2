"""The HTTP client's deadline header: whole milliseconds within bounds, else a named 400."""

from __future__ import annotations

import grpc
import pytest

from hybridinference.common.errors import ServiceError
from hybridinference.gateway.client_deadline import HEADER, MAX_MS, deadline_s


def test_no_header_no_deadline() -> None:
    assert deadline_s(()) is None
    assert deadline_s(None) is None


@pytest.mark.parametrize(("value", "seconds"), [("1", 0.001), ("2500", 2.5), (str(MAX_MS), 600)])
def test_whole_milliseconds_within_bounds(value: str, seconds: float) -> None:
    assert deadline_s(((HEADER, value),)) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "abc", "", str(MAX_MS + 1), "1e3"])
def test_anything_else_is_refused_naming_the_header(value: str) -> None:
    with pytest.raises(ServiceError) as caught:
        deadline_s(((HEADER, value),))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.param == HEADER
