"""The HTML report (``--bp-html``): self-contained, escaped, root causes on top; and, in the slow
tests, rendered by a real headless Chromium at a phone's and a desktop's width."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from backupproto.io.server_process import ServerProcess
from conformance.html_report import render_html
from conformance.results import CaseResult, Cause, Results

ROOT = Path(__file__).resolve().parent.parent
BROKEN = ROOT / "tests" / "broken_servers" / "server.py"
HOSTILE_NAME = '<script>alert("x")</script>"><img src=x onerror=alert(1)>&amp;.txt'
FACTS: dict[str, Any] = {
    "target": "127.0.0.1:1234",
    "target_kind": "given",
    "data_dir": None,
    "seed": 7,
    "cases_collected": 3,
    "duration_s": 1.5,
}


class _Page(HTMLParser):
    """Tags, attributes and text of a page, as a browser's parser sees them."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += attrs

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _results() -> Results:
    results = Results()
    conversation = [
        "conversation connection 1 (127.0.0.1:1234):",
        f"  -> 1103 SEND_FILE file_name={HOSTILE_NAME!r} content_size=16",
        "  <- 2103 FILE_RECEIVED cksum=0x12345678",
    ]
    message = "\n".join(
        [
            "[4.4-file-crc-block-boundary] MUST: the server MUST answer cksum of the plaintext",
            "expected: cksum 0x9abcdef0",
            "actual:   0x12345678",
            f"diagnosis: the value equals zlib.crc32 of {HOSTILE_NAME}",
            *conversation,
        ]
    )
    rows = [
        CaseResult("0-sanity-first", "MUST", "0", "A server MUST serve.", "passed", "", 0.01),
        CaseResult(
            "4.4-file-crc-block-boundary", "MUST", "4.4", "cksum <b>", "failed", message, 0.2, conversation
        ),
        CaseResult("4.2-public-key-twice", "SHOULD", "4.2", "a key twice", "warning", "replaced", 0.1),
    ]
    for number, row in enumerate(rows):
        results.rows[f"node{number}"] = row
    return results


def test_every_text_from_the_run_is_escaped() -> None:
    page = render_html(_results(), FACTS)
    parsed = _Page(page)
    assert set(parsed.tags) <= {
        *("html", "head", "meta", "title", "style", "body", "main", "section", "h1", "h2", "h3", "div"),
        *("dl", "dt", "dd", "table", "thead", "tbody", "tr", "th", "td", "details", "summary", "span"),
        *("p", "pre", "a"),
    }
    assert not [name for name, _ in parsed.attributes if name.startswith("on")]
    text = "".join(parsed.text)
    assert HOSTILE_NAME in text  # shown as the server sent it, as text
    assert "cksum <b>" in text
    assert "<script>" not in page and "<img" not in page


def test_page_is_self_contained_and_fits_a_phone() -> None:
    page = render_html(_results(), FACTS)
    parsed = _Page(page)
    links = [value for name, value in parsed.attributes if name in ("href", "src")]
    assert links and all(value is not None and value.startswith("#") for value in links)
    assert "url(" not in page and "@import" not in page and "http" not in page
    assert ("content", "width=device-width, initial-scale=1") in parsed.attributes


def test_root_causes_come_first_and_link_to_their_cases() -> None:
    results = _results()
    page = render_html(results, FACTS)  # no diagnosis stage: one cause per failed case
    assert page.index("Root causes (1)") < page.index("Cases (3)")
    assert 'href="#case-4_4-file-crc-block-boundary"' in page
    assert 'id="case-4_4-file-crc-block-boundary" open' in page  # failures are unfolded
    cause = Cause("CRC is zlib.crc32, not POSIX cksum", "use cksum", ("4.4-file-crc-block-boundary",))
    results.causes = [cause]
    page = render_html(results, FACTS)
    assert page.index("CRC is zlib.crc32, not POSIX cksum") < page.index("Outcomes by spec section")
    assert page.index("NOT CONFORMANT") < page.index("Root causes")


def _png_pixels(path: Path) -> tuple[int, int, list[list[bytes]]]:
    """(width, height, rows of RGB pixels) of an 8-bit RGB/RGBA PNG, filters undone."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, idat, header = 8, b"", b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        offset += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and color in (2, 6)
    pixel = 3 if color == 2 else 4
    raw, stride, previous = zlib.decompress(idat), width * pixel, bytearray(width * pixel)
    rows: list[list[bytes]] = []
    for row_index in range(height):
        start = row_index * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - pixel] if i >= pixel else 0
            up, corner = previous[i], previous[i - pixel] if i >= pixel else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                estimate = left + up - corner
                candidates = ((abs(estimate - left), 0, left), (abs(estimate - up), 1, up))
                near = min((*candidates, (abs(estimate - corner), 2, corner)))
                line[i] = (line[i] + near[2]) & 0xFF
        rows.append([bytes(line[x * pixel : x * pixel + 3]) for x in range(width)])
        previous = line
    return width, height, rows


def _screenshot(chromium: str, page: Path, png: Path, width: int, height: int) -> None:
    profile = tempfile.mkdtemp(prefix="bp-chromium-")
    try:
        subprocess.run(
            [
                chromium,
                *("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
                *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--screenshot={png}",
                f"--window-size={width},{height}",
                page.as_uri(),
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize(("width", "height"), [(390, 1400), (1280, 1000)])
def test_report_renders_in_headless_chromium(width: int, height: int, tmp_path: Path) -> None:
    """The suite against a server with a wrong CRC writes a report that Chromium renders, at a
    phone's and a desktop's width, as a page with content (not blank). With
    BP_DOC_SCREENSHOTS=DIR the screenshots are kept there (conformance/docs/ in the docs)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("needs Debian's chromium package (apt-get install chromium; .ci/run installs it)")
    fault = [sys.executable, str(BROKEN), "--fault", "zlib-crc"]
    server = ServerProcess.start(tmp_path / "broken-data", command=fault)
    page = tmp_path / "report.html"
    try:
        command = [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider"]
        command += ["--bp-target", str(server.target), "--bp-html", str(page), "--bp-fuzz-examples", "5"]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        server.stop()
    assert done.returncode == 1, done.stdout[-2000:]
    assert "4.4-file-crc-block-boundary" in page.read_text()
    png = tmp_path / f"report-{width}.png"
    _screenshot(chromium, page, png, width, height)
    got_width, got_height, rows = _png_pixels(png)
    assert (got_width, got_height) == (width, height)
    background = rows[0][0]
    sample = [colour for row in rows[::4] for colour in row[::4]]
    inked = sum(1 for colour in sample if colour != background) / len(sample)
    colours = set(sample)
    assert inked > 0.05 and len(colours) > 20  # text, badges and boxes, not a blank page
    keep = os.environ.get("BP_DOC_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(keep) / f"html-report-{width}.png")


def test_a_run_without_cases_has_no_verdict() -> None:
    page = render_html(Results(), {**FACTS, "cases_collected": 83})
    assert "NO VERDICT" in page and "CONFORMANT" not in page
