"""SQLiteStore: the default MetadataStore, one SQLite database file (schema in schema.py).

Put together from its parts, each a module of its own so that none is too long to read:
SQLiteBase (sqlite_base.py: the connection, transactions, group commit and shared row
helpers), SQLiteNamespace (sqlite_namespace.py: names, attributes, xattrs) and SQLiteChunks
(sqlite_chunks.py: chunk lists, inline bytes, orphans, the deletion queue, fsck). What is
left here is small and belongs to no half: the volume-server records and the durable
counters (needle keys, volume ids, inode numbers) the master draws from.
"""
from __future__ import annotations

import os

from cluster.master.sqlite_chunks import SQLiteChunks
from cluster.master.sqlite_namespace import SQLiteNamespace
from cluster.master.store import ServerRecord


class SQLiteStore(SQLiteNamespace, SQLiteChunks):
    """MetadataStore over one SQLite database file in WAL mode."""

    @classmethod
    def open_dir(cls, data_dir: str, synchronous: str = "FULL") -> SQLiteStore:
        os.makedirs(data_dir, exist_ok=True)
        return cls(os.path.join(data_dir, "meta.db"), synchronous)

    # ------------------------------------------------------------ servers and counters

    def counter(self, name: str) -> int:
        with self._tx(write=False) as c:
            row = c.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
            return row[0] if row else 0

    def register_server(self, server_id: int, name: str, grpc_address: str,
                        http_address: str) -> int:
        with self._tx() as c:
            if server_id:
                cur = c.execute(
                    "UPDATE servers SET name=?, grpc_address=?, http_address=? WHERE server_id=?",
                    (name, grpc_address, http_address, server_id),
                )
                if cur.rowcount:
                    return server_id
                # An id this database never issued (e.g. the master's data dir was replaced):
                # adopt it, so the server keeps its identity; AUTOINCREMENT then skips past it.
                c.execute(
                    "INSERT INTO servers (server_id, name, grpc_address, http_address,"
                    " registered_ns) VALUES (?,?,?,?,?)",
                    (server_id, name, grpc_address, http_address, self._now()),
                )
                return server_id
            cur = c.execute(
                "INSERT INTO servers (name, grpc_address, http_address, registered_ns)"
                " VALUES (?,?,?,?)",
                (name, grpc_address, http_address, self._now()),
            )
            assert cur.lastrowid is not None   # set by every INSERT
            return cur.lastrowid

    def get_server(self, server_id: int) -> ServerRecord | None:
        with self._tx(write=False) as c:
            row = c.execute(
                "SELECT server_id, name, grpc_address, http_address FROM servers"
                " WHERE server_id=?", (server_id,)).fetchone()
            return ServerRecord(*row) if row else None

    def server_ids(self) -> list[int]:
        with self._tx(write=False) as c:
            return [r[0] for r in c.execute("SELECT server_id FROM servers ORDER BY server_id")]

    def advance_counter(self, name: str, step: int) -> int:
        with self._tx() as c:
            row = c.execute(
                "UPDATE counters SET value = value + ? WHERE name=? RETURNING value - ?",
                (step, name, step),
            ).fetchone()
            if row is None:
                c.execute("INSERT INTO counters (name, value) VALUES (?, ?)", (name, 1 + step))
                return 1
            return row[0]

    def raise_counter(self, name: str, at_least: int) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = MAX(value, excluded.value)",
                (name, at_least),
            )
