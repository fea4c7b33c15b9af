"""The embedded SQLite database is set up for several writers: WAL, immediate transactions, a busy timeout."""

import pytest
from django.db import connection

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite settings (DATABASE_URL points elsewhere)"),
]


def pragma(name: str):
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA {name}")
        return cursor.fetchone()[0]


def test_every_connection_uses_wal_and_waits_for_the_write_lock():
    # Readers run beside the writer instead of blocking it.
    assert pragma("journal_mode") == "wal"
    # A writer waits up to 30 s for the lock instead of failing with "database is locked".
    assert pragma("busy_timeout") == 30000
    assert pragma("synchronous") == 1  # NORMAL: safe with WAL, no fsync per transaction


def test_a_transaction_holds_the_write_lock_from_its_start():
    """BEGIN IMMEDIATE: a transaction that reads and then writes never fails upgrading its lock."""
    import sqlite3

    from django.contrib.auth.models import Permission
    from django.db import transaction

    with transaction.atomic():
        Permission.objects.exists()  # a read, no write yet
        other = sqlite3.connect(connection.settings_dict["NAME"], timeout=0)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()
