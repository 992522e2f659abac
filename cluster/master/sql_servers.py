"""The SQL stores' small remainder that belongs to neither the namespace nor the chunk lists:
the volume-server records and the durable counters (needle keys, volume ids, inode numbers,
sessions) the master draws from. Written in the SQL both SQLite and PostgreSQL speak
(sql_rows.py)."""
from __future__ import annotations

from cluster.master.sql_rows import SqlRows
from cluster.master.store import ServerRecord


class SqlServers(SqlRows):
    """Volume-server records and durable counters of the SQL stores."""

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
                # adopt it, so the server keeps its identity; the id sequence then skips past it.
                c.execute(
                    "INSERT INTO servers (server_id, name, grpc_address, http_address,"
                    " registered_ns) VALUES (?,?,?,?,?)",
                    (server_id, name, grpc_address, http_address, self._now()),
                )
                self._adopted_server_id(c, server_id)
                return server_id
            return c.execute(
                "INSERT INTO servers (name, grpc_address, http_address, registered_ns)"
                " VALUES (?,?,?,?) RETURNING server_id",
                (name, grpc_address, http_address, self._now()),
            ).fetchone()[0]

    def _adopted_server_id(self, c, server_id: int) -> None:
        """Keep the backend's id sequence past an id adopted from a volume server (SQLite's
        AUTOINCREMENT does this by itself)."""

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
                " ON CONFLICT (name) DO UPDATE SET value = CASE"
                " WHEN excluded.value > counters.value THEN excluded.value"
                " ELSE counters.value END",
                (name, at_least),
            )
