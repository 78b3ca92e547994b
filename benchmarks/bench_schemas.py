"""Parse and build throughput of the construct schemas, against stdlib `struct` in the same run.

    python benchmarks/bench_schemas.py [--seconds 0.5]

Prints operations per second for: the request header parsed by construct's interpreted
parser, by its compiled parser (used in `Schemas.parse_request_header`, safe there
because the length is checked first), by our validating `parse_request_header`, and by a
bare `struct.unpack` baseline; then a whole REGISTER request and a FILE_RECEIVED
response built and parsed. Ratios are against the struct baseline measured here.
The struct code below is a yardstick only; nothing in the project encodes with it.
"""

from __future__ import annotations

import argparse
import struct
import time
from collections.abc import Callable

from backupproto.dialect import RequestCode, ResponseCode
from backupproto.schemas import V3_SCHEMAS as S

CLIENT_ID = bytes(range(16))
HEADER = S.build_request_header(CLIENT_ID, RequestCode.REGISTER, 255)
REGISTER = S.build_request(RequestCode.REGISTER, CLIENT_ID, {"name": "alice"})
RECEIVED_FIELDS = {"client_id": CLIENT_ID, "content_size": 32, "file_name": "a.txt", "cksum": 1}
RECEIVED = S.build_response(ResponseCode.FILE_RECEIVED, RECEIVED_FIELDS)
BASELINE = struct.Struct("<16sBHI")


def rate(action: Callable[[], object], seconds: float) -> float:
    """Operations per second of `action`, measured for about `seconds`."""
    count, batch = 0, 256
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(batch):
            action()
        count += batch
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    seconds = parser.parse_args().seconds
    compiled = S.request_header.compile()
    rows = [
        ("header parse: struct.unpack (baseline)", lambda: BASELINE.unpack(HEADER)),
        ("header parse: construct interpreted", lambda: S.request_header.parse(HEADER)),
        ("header parse: construct compiled", lambda: compiled.parse(HEADER)),
        ("header parse: Schemas.parse_request_header", lambda: S.parse_request_header(HEADER)),
        ("header build: struct.pack (baseline)", lambda: BASELINE.pack(CLIENT_ID, 3, 1100, 255)),
        ("header build: Schemas.build_request_header", lambda: S.build_request_header(CLIENT_ID, 1100, 255)),
        ("REGISTER parse: Schemas.parse_request", lambda: S.parse_request(REGISTER)),
        (
            "REGISTER build: Schemas.build_request",
            lambda: S.build_request(RequestCode.REGISTER, CLIENT_ID, {"name": "alice"}),
        ),
        ("FILE_RECEIVED parse: Schemas.parse_response", lambda: S.parse_response(RECEIVED)),
        (
            "FILE_RECEIVED build: Schemas.build_response",
            lambda: S.build_response(ResponseCode.FILE_RECEIVED, RECEIVED_FIELDS),
        ),
    ]
    results = {name: rate(action, seconds) for name, action in rows}
    parse_base = results[rows[0][0]]
    build_base = results[rows[4][0]]
    print(f"{'operation':48} {'ops/s':>12} {'vs struct':>10}")
    for name, value in results.items():
        base = build_base if "build" in name else parse_base
        print(f"{name:48} {value:12,.0f} {value / base:9.3f}x")


if __name__ == "__main__":
    main()
