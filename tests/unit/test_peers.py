"""What masters tell each other over NOTIFY (peers.py), and the placeholder translation the
PostgreSQL store relies on (pg_base.py): pure functions, no server."""
from __future__ import annotations

import json

import pytest

from cluster.master.callbacks import Keys
from cluster.master.peers import MAX_PAYLOAD, decode_keys, encode_moved, encode_notices
from cluster.master.pg_base import _pg_sql

T = pytest.mark.timeout(10)


@T
def test_break_notice_round_trips():
    keys = Keys(paths={"/a/b", "/é"}, trees={"/a"}, inos={7, 9})
    [text] = encode_notices(41, 3, keys)
    origin, seq, part, back = decode_keys(text)
    assert (origin, seq, part) == (41, 3, 0)
    assert back == keys


@T
def test_a_notice_larger_than_one_payload_goes_in_parts_that_lose_no_key():
    keys = Keys(paths={f"/dir/{'x' * 200}{i}" for i in range(100)}, inos=set(range(500)))
    texts = encode_notices(1, 2, keys)
    assert len(texts) > 1
    assert all(len(t.encode()) <= MAX_PAYLOAD for t in texts)
    back = Keys()
    for n, text in enumerate(texts):
        _, seq, part, got = decode_keys(text)
        assert (seq, part) == (2, n)
        back.update(got)
    assert back == keys


@T
def test_one_key_too_long_for_any_payload_breaks_everything():
    keys = Keys(paths={"/" + "\u0001" * 3000})
    [text] = encode_notices(1, 2, keys)
    assert len(text.encode()) <= MAX_PAYLOAD
    assert decode_keys(text)[3].trees == {"/"}


@T
def test_session_moved_notice_names_the_session():
    assert json.loads(encode_moved(5, 1 << 62)) == {"o": 5, "moved": 1 << 62}


@T
def test_placeholders_become_psycopg_ones_and_percent_signs_stay_literal():
    assert _pg_sql("SELECT ? FROM t WHERE a=? AND b LIKE '5%'") == \
        "SELECT %s FROM t WHERE a=%s AND b LIKE '5%%'"
