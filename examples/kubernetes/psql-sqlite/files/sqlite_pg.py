"""A Postgres-wire server over a read-only SQLite file (buenavista's server).

    python3 sqlite_pg.py /data/sqlite/current/db.sqlite     # listens on $BUENAVISTA_PORT (5433)

Every client connection opens the file by its path, so a session sees the
version that `current` pointed at when it connected, to its end; sessions
opened after an aetherfs switch see the new version. Nothing to reload.
"""
import os
import signal
import sqlite3
import sys

from buenavista import core, postgres


def bvtype(value):
    if value is None:
        return core.BVType.TEXT
    if isinstance(value, bool):
        return core.BVType.BOOL
    if isinstance(value, int):
        return core.BVType.BIGINT
    if isinstance(value, float):
        return core.BVType.FLOAT
    if isinstance(value, bytes):
        return core.BVType.BYTES
    return core.BVType.TEXT


class Result(core.QueryResult):
    def __init__(self, description=None, rows=(), status=""):
        super().__init__()
        self.names = [d[0] for d in description or []]
        self.data = list(rows)
        self.types = []
        for i in range(len(self.names)):
            first = next((r[i] for r in self.data if r[i] is not None), None)
            self.types.append(bvtype(first))
        self._status = status or "SELECT %d" % len(self.data)

    def has_results(self):
        return bool(self.names)

    def column_count(self):
        return len(self.names)

    def column(self, index):
        return self.names[index], self.types[index]

    def rows(self):
        return iter([list(r) for r in self.data])

    def status(self):
        return self._status


class SqliteSession(core.Session):
    def __init__(self, path):
        super().__init__()
        # immutable=1: no locks, no -wal/-shm files (the directory is read-only).
        self.db = sqlite3.connect(
            "file:%s?mode=ro&immutable=1" % path, uri=True, check_same_thread=False
        )
        # Open the file now, at connect time, not at the first query.
        self.db.execute("SELECT count(*) FROM sqlite_master").fetchall()
        self.txn = False

    def cursor(self):
        return self.db.cursor()

    def close(self):
        self.db.close()

    def in_transaction(self):
        return self.txn

    def execute_sql(self, sql, params=None):
        word = sql.strip().rstrip(";").split(None, 1)[0].lower() if sql.strip() else ""
        if word in ("begin", "start"):
            self.txn = True
            return Result(status="BEGIN")
        if word in ("commit", "end", "rollback"):
            self.txn = False
            return Result(status=word.upper() if word != "end" else "COMMIT")
        if word in ("set", "show", "discard", "reset"):
            return Result(status=word.upper())
        cur = self.db.execute(sql, params or ())
        return Result(cur.description, cur.fetchall() if cur.description else ())


class SqliteConnection(core.Connection):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def parameters(self):
        return {"server_version": "14.0 (sqlite)", "client_encoding": "UTF8", "DateStyle": "ISO"}

    def new_session(self):
        return SqliteSession(self.path)


def main():
    path = sys.argv[1]
    host = os.environ.get("BUENAVISTA_HOST", "127.0.0.1")
    port = int(os.environ.get("BUENAVISTA_PORT", "5433"))
    server = postgres.BuenaVistaServer((host, port), SqliteConnection(path))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("serving %s on %s:%d" % (path, host, port), flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
