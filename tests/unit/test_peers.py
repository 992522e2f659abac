"""What masters tell each other over NOTIFY (peers.py), and the placeholder translation the
PostgreSQL store relies on (pg_base.py): pure functions, no server."""
from __future__ import annotations

import json

import pytest

from cluster.master.callbacks import Keys
from cluster.master.peers import MAX_PAYLOAD, decode_keys, encode_keys, encode_moved
from cluster.master.pg_base import _pg_sql

T = pytest.mark.timeout(10)


@T
def test_break_notice_round_trips():
    keys = Keys(paths={"/a/b", "/é"}, trees={"/a"}, inos={7, 9})
    origin, seq, back = decode_keys(encode_keys(41, 3, keys))
    assert (origin, seq) == (41, 3)
    assert back == keys


@T
def test_a_notice_too_large_for_notify_breaks_everything():
    keys = Keys(paths={f"/dir/{'x' * 200}{i}" for i in range(100)})
    text = encode_keys(1, 2, keys)
    assert len(text.encode()) <= MAX_PAYLOAD
    _, _, back = decode_keys(text)
    assert back.trees == {"/"}   # a break of everything: never fewer than were changed
    assert not back.paths


@T
def test_session_moved_notice_names_the_session():
    assert json.loads(encode_moved(5, 1 << 62)) == {"o": 5, "moved": 1 << 62}


@T
def test_placeholders_become_psycopg_ones_and_percent_signs_stay_literal():
    assert _pg_sql("SELECT ? FROM t WHERE a=? AND b LIKE '5%'") == \
        "SELECT %s FROM t WHERE a=%s AND b LIKE '5%%'"
