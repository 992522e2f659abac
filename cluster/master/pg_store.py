"""PostgresStore: the MetadataStore for several masters over one PostgreSQL database, chosen
by `kelp master --meta postgresql://...`.

The same operations as SQLiteStore (the shared SQL of sql_namespace.py, sql_chunks.py,
sql_servers.py) over PostgresBase (pg_base.py: connections, SERIALIZABLE transactions with
conflict retry, group commit) and pg_schema.py's tables.
"""
from __future__ import annotations

from cluster.master.pg_base import PgConn, PostgresBase, retrying_methods
from cluster.master.sql_chunks import SqlChunks
from cluster.master.sql_namespace import SqlNamespace
from cluster.master.sql_servers import SqlServers


@retrying_methods
class PostgresStore(PostgresBase, SqlNamespace, SqlChunks, SqlServers):
    """MetadataStore over a PostgreSQL database that several masters may share."""

    def _adopted_server_id(self, c: PgConn, server_id: int) -> None:
        c.execute("SELECT setval(pg_get_serial_sequence('servers', 'server_id'),"
                  " (SELECT MAX(server_id) FROM servers))")
