-- A metadata database written by KelpFS at schema version 1 (commit ae17012):
-- /docs, /docs/a.txt (5 bytes in one chunk, xattr user.color), /docs/link -> a.txt.
BEGIN TRANSACTION;
CREATE TABLE chunks (
        ino           INTEGER NOT NULL,
        file_offset   INTEGER NOT NULL,
        length        INTEGER NOT NULL,
        fid           TEXT NOT NULL,
        needle_offset INTEGER NOT NULL,
        needle_size   INTEGER NOT NULL,
        crc32c        INTEGER NOT NULL,
        PRIMARY KEY (ino, file_offset)
    ) WITHOUT ROWID;
INSERT INTO "chunks" VALUES(3,0,5,'3,01637037d6',0,5,12345);
CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
INSERT INTO "counters" VALUES('next_ino',5);
INSERT INTO "counters" VALUES('needle_key_hwm',1);
INSERT INTO "counters" VALUES('volume_id_hwm',1);
CREATE TABLE deletion_queue (
        fid         TEXT PRIMARY KEY,
        queued_at   INTEGER NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        next_try_ns INTEGER NOT NULL DEFAULT 0
    );
CREATE TABLE entries (
        parent INTEGER NOT NULL,
        name   TEXT NOT NULL,
        ino    INTEGER NOT NULL,
        PRIMARY KEY (parent, name)
    ) WITHOUT ROWID;
INSERT INTO "entries" VALUES(1,'docs',2);
INSERT INTO "entries" VALUES(2,'a.txt',3);
INSERT INTO "entries" VALUES(2,'link',4);
CREATE TABLE inodes (
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
        orphan      INTEGER NOT NULL DEFAULT 0
    );
INSERT INTO "inodes" VALUES(1,16877,0,0,0,1700000000000000000,1700000000000001000,1700000000000001000,3,NULL,0,0,0);
INSERT INTO "inodes" VALUES(2,16877,1000,1000,0,1700000000000001000,1700000000000005000,1700000000000005000,2,NULL,0,0,0);
INSERT INTO "inodes" VALUES(3,33188,1000,1000,5,1700000000000002000,1700000000000004000,1700000000000006000,1,NULL,0,1,0);
INSERT INTO "inodes" VALUES(4,41471,1000,1000,5,1700000000000005000,1700000000000005000,1700000000000005000,1,'a.txt',0,0,0);
CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
INSERT INTO "meta" VALUES('schema_version','1');
CREATE TABLE servers (
        server_id     INTEGER PRIMARY KEY AUTOINCREMENT,
        name          TEXT NOT NULL,
        grpc_address  TEXT NOT NULL,
        http_address  TEXT NOT NULL DEFAULT '',
        registered_ns INTEGER NOT NULL
    );
CREATE TABLE xattrs (
        ino   INTEGER NOT NULL,
        name  TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (ino, name)
    ) WITHOUT ROWID;
INSERT INTO "xattrs" VALUES(3,'user.color',X'626C7565');
CREATE INDEX entries_by_ino ON entries (ino);
CREATE INDEX deletion_queue_due ON deletion_queue (next_try_ns);
DELETE FROM "sqlite_sequence";
COMMIT;
