"""The master's SQLite schema: the canonical reference for what meta.db holds.

`create_schema` is the one place the tables are declared, each with a comment on what it is
for. `SCHEMA_VERSION` is stored in the `meta` table; a database written by a newer KelpFS is
refused rather than misread, and an older one is upgraded at start by the numbered steps in
`MIGRATIONS` (step N turns a version N-1 database into version N), all in the one transaction
that opens the database, so an upgrade that fails leaves the old database as it was.

Conventions: times are nanoseconds since the Unix epoch, sizes and offsets are bytes, names are
TEXT in SQLite's default BINARY collation, which compares UTF-8 bytewise (so `ORDER BY name`
is the bytewise order the ReadDir contract promises).
"""
from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 3

ROOT_INO = 1

# Counter names in the `counters` table.
COUNTER_NEXT_INO = "next_ino"
COUNTER_NEEDLE_KEY = "needle_key_hwm"   # every needle key below it may have been handed out
COUNTER_VOLUME_ID = "volume_id_hwm"     # every volume id below it may have been handed out
COUNTER_SESSIONS = "sessions_opened"    # > 0 once a run of the master opened a mount session

_TABLES = [
    # Key/value facts about the database itself (schema_version).
    """CREATE TABLE IF NOT EXISTS meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    # One row per file, directory, symlink or special file (FIFO, socket, character or block
    # device: metadata only, the kernel gives them their behaviour; `rdev` is a device's
    # st_rdev, 0 for every other type). A small regular file keeps its bytes here, not in
    # chunks: `inline_data` (NULL for a file with chunks) holds bytes [0, len) of the file,
    # zeros follow up to `size`, and `inline_crc` is their CRC32C. nlink counts directory
    # entries naming the inode (directories: 2 + subdirectories). `orphan` != 0 marks a file
    # whose last name went while a client still had it open: it keeps its chunks until
    # ReleaseInode, or until the mount session whose id `orphan` is ends (1: a client with no
    # session, freed only by ReleaseInode). `version` grows with every commit or truncate so
    # readers can tell a chunk list changed. `target` is a symlink's target (NULL otherwise);
    # `replication` is the copies per chunk the file asks for (0 = cluster default).
    """CREATE TABLE IF NOT EXISTS inodes (
        ino         INTEGER PRIMARY KEY,
        mode        INTEGER NOT NULL,
        uid         INTEGER NOT NULL DEFAULT 0,
        gid         INTEGER NOT NULL DEFAULT 0,
        size        INTEGER NOT NULL DEFAULT 0,
        atime_ns    INTEGER NOT NULL,
        mtime_ns    INTEGER NOT NULL,
        ctime_ns    INTEGER NOT NULL,
        nlink       INTEGER NOT NULL,
        target      TEXT,
        replication INTEGER NOT NULL DEFAULT 0,
        version     INTEGER NOT NULL DEFAULT 0,
        orphan      INTEGER NOT NULL DEFAULT 0,
        rdev        INTEGER NOT NULL DEFAULT 0,
        inline_data BLOB,
        inline_crc  INTEGER
    )""",
    # Directory entries: (parent directory, name) -> inode. Hard links are several rows with
    # the same ino.
    """CREATE TABLE IF NOT EXISTS entries (
        parent INTEGER NOT NULL,
        name   TEXT NOT NULL,
        ino    INTEGER NOT NULL,
        PRIMARY KEY (parent, name)
    ) WITHOUT ROWID""",
    # Finding the entry of a directory inode (walking up for rename's subtree check).
    "CREATE INDEX IF NOT EXISTS entries_by_ino ON entries (ino)",
    # The files a session keeps open after their last unlink (few; reclaimed when it ends).
    "CREATE INDEX IF NOT EXISTS inodes_orphan ON inodes (orphan) WHERE orphan != 0",
    # A file's visible bytes: sorted, non-overlapping pieces, each the bytes
    # [needle_offset, needle_offset + length) of needle `fid` placed at file_offset. Gaps read
    # as zeros. needle_size and crc32c describe the whole needle (readers verify it).
    """CREATE TABLE IF NOT EXISTS chunks (
        ino           INTEGER NOT NULL,
        file_offset   INTEGER NOT NULL,
        length        INTEGER NOT NULL,
        fid           TEXT NOT NULL,
        needle_offset INTEGER NOT NULL,
        needle_size   INTEGER NOT NULL,
        crc32c        INTEGER NOT NULL,
        PRIMARY KEY (ino, file_offset)
    ) WITHOUT ROWID""",
    # Extended attributes: (inode, name) -> value.
    """CREATE TABLE IF NOT EXISTS xattrs (
        ino   INTEGER NOT NULL,
        name  TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (ino, name)
    ) WITHOUT ROWID""",
    # Needles no file references any more, waiting for the reaper to delete them from every
    # replica. A row goes only when every replica confirmed; `attempts` and `next_try_ns`
    # back off retries of a volume whose replicas are down.
    """CREATE TABLE IF NOT EXISTS deletion_queue (
        fid         TEXT PRIMARY KEY,
        queued_at   INTEGER NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        next_try_ns INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS deletion_queue_due ON deletion_queue (next_try_ns)",
    # Volume servers ever registered: the persistent, unique server ids (AUTOINCREMENT so an id
    # is never handed out twice) with the name and addresses last seen.
    """CREATE TABLE IF NOT EXISTS servers (
        server_id     INTEGER PRIMARY KEY AUTOINCREMENT,
        name          TEXT NOT NULL,
        grpc_address  TEXT NOT NULL,
        http_address  TEXT NOT NULL DEFAULT '',
        registered_ns INTEGER NOT NULL
    )""",
    # Durable counters: next inode number, needle-key and volume-id high-water marks.
    """CREATE TABLE IF NOT EXISTS counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    )""",
]


# Step N upgrades a version N-1 database to version N. Never edit a released step: add one.
MIGRATIONS: dict[int, list[str]] = {
    # 2: special files (FIFOs, sockets, devices) keep their st_rdev; small files their bytes.
    2: ["ALTER TABLE inodes ADD COLUMN rdev INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE inodes ADD COLUMN inline_data BLOB",
        "ALTER TABLE inodes ADD COLUMN inline_crc INTEGER"],
    # 3: orphans name the session that keeps them open (the index finds them when it ends).
    3: ["CREATE INDEX IF NOT EXISTS inodes_orphan ON inodes (orphan) WHERE orphan != 0"],
}


class SchemaError(RuntimeError):
    """The database cannot be used by this version of KelpFS."""


def stored_version(conn: sqlite3.Connection) -> int | None:
    """The schema version a database records, or None for a new (empty) database."""
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
    ).fetchone():
        return None
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return None if row is None else int(row[0])


def create_schema(conn: sqlite3.Connection, now_ns: int) -> None:
    """Create (or check) every table in one transaction; `conn` must be in autocommit mode."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = stored_version(conn)
        if found is not None and found > SCHEMA_VERSION:
            raise SchemaError(
                f"metadata schema version {found} is newer than this KelpFS understands "
                f"({SCHEMA_VERSION}); upgrade KelpFS"
            )
        if found is not None:
            for step in range(found + 1, SCHEMA_VERSION + 1):
                for stmt in MIGRATIONS[step]:
                    conn.execute(stmt)
        for stmt in _TABLES:  # a fresh database; on an upgraded one, only what is new
            conn.execute(stmt)
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        conn.execute(
            "INSERT OR IGNORE INTO inodes (ino, mode, uid, gid, size, atime_ns, mtime_ns,"
            " ctime_ns, nlink) VALUES (?, ?, 0, 0, 0, ?, ?, ?, 2)",
            (ROOT_INO, 0o040755, now_ns, now_ns, now_ns),
        )
        for name, value in (
            (COUNTER_NEXT_INO, ROOT_INO + 1),
            (COUNTER_NEEDLE_KEY, 1),
            (COUNTER_VOLUME_ID, 1),
        ):
            conn.execute(
                "INSERT OR IGNORE INTO counters (name, value) VALUES (?, ?)", (name, value)
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
