"""Page tokens: authenticated with the deployment's key, bound to the
request's filters, and read back only as the sort key's own types."""

from __future__ import annotations

import base64
import datetime as dt
import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmc.invoice.v1 import invoice_service_pb2
from services.kit import paging
from services.kit.errors import InvalidArgument


@pytest.fixture(autouse=True)
def key() -> None:
    paging.use_key(b"k" * 32)


REQUEST = invoice_service_pb2.ListInvoicesRequest(seller_nit="900508908")
PARTS = [paging.TEXT, paging.INT, paging.INT32, paging.SCORE, paging.INSTANT, paging.DATE]
TYPES = {"text": str, "int": int, "int32": int, "score": float, "instant": dt.datetime, "date": dt.date}
KEYS = (paging.INSTANT, paging.TEXT)


def test_a_token_carries_its_sort_key_back_with_its_types() -> None:
    moment = dt.datetime(2026, 11, 30, 15, 4, 5, 123456, tzinfo=dt.UTC)
    token = paging.encode_page_token([moment, "abc"], REQUEST, KEYS)
    assert paging.decode_page_token(token, REQUEST, KEYS) == [moment, "abc"]


def test_a_token_minted_with_another_key_or_for_other_filters_is_refused() -> None:
    token = paging.encode_page_token([dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "x"], REQUEST, KEYS)
    other = invoice_service_pb2.ListInvoicesRequest(seller_nit="1")
    with pytest.raises(InvalidArgument) as caught:
        paging.decode_page_token(token, other, KEYS)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    paging.use_key(b"another deployment's key")
    with pytest.raises(InvalidArgument):
        paging.decode_page_token(token, REQUEST, KEYS)


@settings(max_examples=300, deadline=None)
@given(
    sort_key=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
        max_leaves=8,
    ),
    parts=st.lists(st.sampled_from(PARTS), min_size=1, max_size=3),
)
def test_any_sort_key_decodes_to_its_types_or_is_refused(sort_key: Any, parts: list[paging.KeyPart]) -> None:
    body = json.dumps({"k": sort_key, "f": paging.request_fingerprint(REQUEST)}).encode()
    mac = paging._mac(body).encode()  # signed as a holder of the key could
    forged = base64.urlsafe_b64encode(body + b"." + mac).decode().rstrip("=")
    try:
        decoded = paging.decode_page_token(forged, REQUEST, parts)
    except InvalidArgument as exc:
        refused = exc.reason
    else:
        refused = ""
        assert decoded is not None
        for part, value in zip(parts, decoded, strict=True):
            assert isinstance(value, TYPES[part.name])
    assert refused in ("", "INVALID_PAGE_TOKEN")


def test_the_key_is_generated_once_and_shared(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "page-token.key"
    first = paging.key_from("", path)
    assert len(first) == 32
    assert paging.key_from("", path) == first
    assert path.stat().st_mode & 0o777 == 0o600
    assert paging.key_from("configured-secret-value", path) == b"configured-secret-value"


def _key_in(path: str) -> bytes:
    return paging.key_from("", Path(path))


def test_processes_starting_together_agree_on_one_whole_key(tmp_path: Path) -> None:
    """Services start at once on a fresh data directory: none may read the
    key half written (an empty key stopped one), and all must get the same."""
    # One pool for every attempt (spawning six interpreters is most of the cost);
    # each attempt is a fresh directory that twelve calls race to create the key in.
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        for attempt in range(5):
            path = tmp_path / f"attempt-{attempt}" / "page-token.key"
            keys = pool.map(_key_in, [str(path)] * 12)
            assert len(set(keys)) == 1
            assert len(keys[0]) == 32


def test_a_key_file_left_torn_is_replaced_not_used(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "page-token.key"
    path.parent.mkdir()
    path.write_bytes(b"")  # a writer died between creating and writing it
    key = paging.key_from("", path)
    assert len(key) == 32
    assert paging.key_from("", path) == key
