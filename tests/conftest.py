"""Shared fixtures: a real FerretDB per test session, started on a free port."""

from __future__ import annotations

from collections.abc import Iterator

import pymongo
import pytest

from scalyproxy.backend import FerretDB


@pytest.fixture(scope="session")
def ferretdb() -> Iterator[FerretDB]:
    """One FerretDB (SQLite, temporary data dir) for the whole test session; stopped by PID."""
    server = FerretDB().start()
    try:
        client: pymongo.MongoClient = pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=10_000)
        client.admin.command("ping")
        client.close()
        yield server
    finally:
        server.stop()


@pytest.fixture()
def direct_client(ferretdb: FerretDB) -> Iterator[pymongo.MongoClient]:
    """A pymongo client straight to the backend (no proxy), for set-up and checks."""
    client: pymongo.MongoClient = pymongo.MongoClient(ferretdb.uri, serverSelectionTimeoutMS=10_000)
    try:
        yield client
    finally:
        client.close()
