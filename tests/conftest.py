"""Shared test setup: --run-slow / --run-load, the `reference_server` fixtures (a real subprocess)
and `in_process_server` (the server in a thread of this process, for monkeypatched runs)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.server_process import ServerProcess

from reference_server import Server, ServerConfig


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")
    parser.addoption("--run-load", action="store_true", default=False, help="run tests marked load")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for marker, option in (("slow", "--run-slow"), ("load", "--run-load")):
        if config.getoption(option):
            continue
        skip = pytest.mark.skip(reason=f"marked {marker}: run with {option}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def reference_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh reference server (`python -m reference_server --port 0`) on its own data folder."""
    server = ServerProcess.start(tmp_path / "server-data")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shared_reference_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One reference server for a whole test module (cheaper; tests must not depend on its state)."""
    server = ServerProcess.start(tmp_path_factory.mktemp("shared-server") / "server-data")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def in_process_server(tmp_path: Path) -> Iterator[Server]:
    server = Server(ServerConfig(data_dir=tmp_path / "data"))
    server.start()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(10)
