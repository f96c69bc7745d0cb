"""The SQLite store (the embedded default) and the one-thread connection it shares with the
dry-run outbox."""

from pyloto_corp.adapters.sqlite.base import SQLiteThread, in_use
from pyloto_corp.adapters.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore", "SQLiteThread", "in_use"]
