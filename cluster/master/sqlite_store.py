"""SQLiteStore: the default MetadataStore, one SQLite database file (schema in schema.py).

Put together from its parts, each a module of its own so that none is too long to read:
SQLiteBase (sqlite_base.py: the connection, transactions and group commit) under the SQL both
stores share: SqlNamespace (sql_namespace.py: names, attributes, xattrs), SqlChunks
(sql_chunks.py: chunk lists, inline bytes, orphans, the deletion queue, fsck) and SqlServers
(sql_servers.py: volume-server records, durable counters).
"""
from __future__ import annotations

import os

from cluster.master.sql_chunks import SqlChunks
from cluster.master.sql_namespace import SqlNamespace
from cluster.master.sql_servers import SqlServers
from cluster.master.sqlite_base import SQLiteBase


class SQLiteStore(SQLiteBase, SqlNamespace, SqlChunks, SqlServers):
    """MetadataStore over one SQLite database file in WAL mode."""

    @classmethod
    def open_dir(cls, data_dir: str, synchronous: str = "FULL") -> SQLiteStore:
        os.makedirs(data_dir, exist_ok=True)
        return cls(os.path.join(data_dir, "meta.db"), synchronous)
