"""Client cases: file content and its framing (spec 3, 4.4, 7.3), and several files in one run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backupproto.dialect import RequestCode
from conformance.case import INFO, MUST

from .checks import backup_ok, content, raw_field
from .context import ClientCase, client_case
from .server import Script

SIZES = {"0-bytes": 0, "15-bytes": 15, "16-bytes": 16, "17-bytes": 17, "1-mib": 1 << 20, "8-mib": 8 << 20}
CBC_REQUIREMENT = (
    "The whole file is one CBC stream: one IV for the whole file, the blocks chained from the "
    "first byte to the last, one padding at the end. Chunking the encryption (a new IV or new "
    "padding per chunk) is not conformant."
)


def _size_case(label: str, size: int) -> tuple[str, Callable[..., Any]]:
    @client_case(f"7.3-client-content-{label}", level=MUST, requirement=CBC_REQUIREMENT)
    def size_case(client_case: ClientCase) -> None:
        files = {f"file-{label}.bin": content(size, size)}
        outcome = client_case.run(Script(), files)
        backup_ok(client_case, outcome, files)

    name = "test_content_" + label.replace("-", "_")
    size_case.__name__ = size_case.__qualname__ = name
    size_case.__doc__ = f"A {size}-byte file."
    return name, size_case


for _label, _size in SIZES.items():
    _name, _function = _size_case(_label, _size)
    globals()[_name] = _function
del _label, _size, _name, _function  # a case collected once, under its own name


@client_case(
    "4.4-client-content-size",
    level=MUST,
    requirement=(
        "`content_size` is the size of the encrypted content: a multiple of 16 and at least 16 "
        "(an empty file encrypts to one block of padding), else `bad_content_size` (offset 23). "
        "Then `payload_size` MUST equal `259 + content_size`, else `payload_size_mismatch` (field"
        " `payload_size`, offset 19)."
    ),
)
def test_content_size(client_case: ClientCase) -> None:
    files = {"seventeen.txt": b"seventeen bytes!\n"}
    outcome = client_case.run(Script(), files)
    backup_ok(client_case, outcome, files)


@client_case(
    "3.4-client-names-nul-padded",
    level=MUST,
    requirement=(
        "The fields `name` and `file_name` are 255 bytes: the text, one NUL byte (0x00) "
        "terminating it, then NUL bytes up to 255."
    ),
)
def test_names(client_case: ClientCase) -> None:
    files = {"plain name.txt": b"x"}
    outcome = client_case.run(Script(), files)
    backup_ok(client_case, outcome, files)
    for connection in outcome.connections:
        for request, raw in zip(connection.requests, connection.raw_requests, strict=True):
            field = "name" if request.code in (RequestCode.REGISTER, RequestCode.RECONNECT) else "file_name"
            want = outcome.name if field == "name" else "plain name.txt"
            if request.code is RequestCode.SEND_PUBLIC_KEY:
                continue
            data = raw_field(client_case, raw, request.code, field)
            padded = want.encode("ascii").ljust(client_case.dialect.name_size, b"\x00")
            if data != padded:
                client_case.fail(
                    f"{request.code.name} {field}: {want!r}, NUL, NUL padding",
                    f"{data[:40]!r}... ({len(data)} bytes)",
                )


@client_case(
    "3.1-client-version-byte",
    level=MUST,
    requirement=("`version`: MUST be 3."),
)
def test_version_byte(client_case: ClientCase) -> None:
    outcome = client_case.run(Script(), {"v.txt": b"version\n"})
    backup_ok(client_case, outcome, {"v.txt": b"version\n"})
    version = client_case.dialect.version
    for connection in outcome.connections:
        for request, raw in zip(connection.requests, connection.raw_requests, strict=True):
            got = raw_field(client_case, raw, None, "version")
            if got != version:
                client_case.fail(f"version {version} in {request.code.name}", f"version {got}")


@client_case(
    "12.1-client-several-files",
    level=INFO,
    requirement=("The file name sent is its last path component, which must satisfy the file-name grammar."),
)
def test_several_files(client_case: ClientCase) -> None:
    files = {"a.txt": b"first\n", "b.bin": content(5000, 5), "c.txt": b""}
    outcome = client_case.run(Script(), files)
    backup_ok(client_case, outcome, files)
