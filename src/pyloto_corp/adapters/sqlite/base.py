"""One SQLite connection on one worker thread, shared by the SQLite-backed adapters.

Every call runs on the same thread, so callers in one event loop are serialised without
locks; each failure to reach the file becomes the adapter's own "unavailable" error.
"""

from __future__ import annotations

import asyncio
import fcntl
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")


def _take_lock(path: Path) -> IO[str]:
    """An exclusive lock beside the database; the OS drops it if the process dies."""
    lock = open(f"{path}.lock", "a+")  # noqa: SIM115 - held until close()
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise sqlite3.OperationalError(
            f"{path} is in use by another pyloto process; one process serves one SQLite file"
        ) from None
    return lock


def in_use(path: Path) -> bool:
    """Whether another process holds `path`'s lock now (a running `pyloto serve`), so a
    command can refuse in one line before it starts anything."""
    if not Path(f"{path}.lock").exists():
        return False
    try:
        _take_lock(path).close()
    except sqlite3.OperationalError:
        return True
    return False


@contextmanager
def unavailable_on_failure(unavailable: type[Exception]) -> Iterator[None]:
    """The one place a failure to reach the file (locked, unopenable or corrupt, or a
    directory that cannot be created) becomes the adapter's `unavailable` error."""
    try:
        yield
    except (sqlite3.DatabaseError, OSError) as error:
        raise unavailable(f"sqlite: {error}") from error


class SQLiteThread:
    """A lazily opened connection (WAL, fsync on commit) and the thread that uses it."""

    def __init__(
        self,
        path: Path,
        schema: str,
        unavailable: type[Exception],
        name: str,
        exclusive: bool = False,
        migrate: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """`schema`: a script run on every open (its statements IF NOT EXISTS; may be empty).
        `exclusive`: hold a lock so no other process opens the same file this way.
        `migrate`: run once the schema script has run, to bring a file written by an
        earlier version up to date, or to make the schema itself when it needs more than
        a script (it opens its own transactions)."""
        self.path = path
        self.schema = schema
        self.migrate = migrate
        self.unavailable = unavailable
        self.exclusive = exclusive
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None
        self._lock: IO[str] | None = None
        self._closed = False

    def connection(self) -> sqlite3.Connection:
        """The open connection (only call from work given to `run`)."""
        if self._conn is None:
            if self.path.parent != Path():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.exclusive and self._lock is None:
                self._lock = _take_lock(self.path)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                # FULL: an acknowledged webhook survives a crash of the process or the machine.
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA busy_timeout=5000")
                conn.executescript(self.schema)
                if self.migrate is not None:
                    self.migrate(conn)
            except BaseException:
                conn.close()
                self._release_lock()
                raise
            self._conn = conn
        return self._conn

    async def run(self, work: Callable[[], T]) -> T:
        """Run `work` on the connection's thread; failures to reach the file → unavailable."""
        if self._closed:
            raise self.unavailable(f"sqlite: {self.path} is closed")
        with unavailable_on_failure(self.unavailable):
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one write transaction (only call from work given to `run`)."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return result

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    async def close(self) -> None:
        """Close the connection, release the lock and stop the thread."""
        if self._closed:
            return

        def work() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._release_lock()

        await asyncio.get_running_loop().run_in_executor(self._executor, work)
        self._closed = True
        self._executor.shutdown(wait=True)
