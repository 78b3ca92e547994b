"""Self-test of client mode: the reference client passes every client case, and each deliberately
broken client (tests/broken_clients/client.py --fault NAME) is caught by the named MUST case with a
message naming its fault; a client that hangs or crashes is reported as such."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance.case import CASES

ROOT = Path(__file__).resolve().parent.parent
BROKEN = ROOT / "tests" / "broken_clients" / "client.py"
REFERENCE = f"{shlex.quote(sys.executable)} -m reference_client --timeout 2 --retry-delay 0.05"
SUITE_TIMEOUT_S = 240
REPORT_OPTION = "--bp-report"

# fault -> {case id that must fail: a pattern its message must contain}
CAUGHT_BY: dict[str, dict[str, str]] = {
    "never-retry-crc": {"8.4-client-crc-mismatch-resends": r"NEVER RESENDS"},
    "retry-forever": {"8.4-client-crc-gives-up": r"RETRIES FOREVER"},
    "four-sends": {"8.4-client-crc-gives-up": r"ONE SEND TOO MANY, the 4-send reading"},
    "no-1106": {"8.4-client-crc-gives-up": r"NO 1106 after the last mismatch"},
    "chunked-cbc": {"7.3-client-content-1-mib": r"each 65536-byte chunk as a separate CBC stream"},
    "no-padding": {"7.3-client-content-16-bytes": r"no padding block"},
    "re-register": {"8.4-client-reconnects": r"re-registers \(1100\) although me.info exists"},
    "ignore-2106": {"8.4-client-reconnect-denied": r"ignored 2106"},
    "big-endian": {"8.4-client-registers": r"payload_size is big-endian"},
    "wrong-content-size": {"4.4-client-content-size": r"content_size 17 is the PLAINTEXT size"},
    "no-retry-2107": {"8.4-client-2107-retries": r"GIVES UP ON THE FIRST 2107"},
    "version-2": {"3.1-client-version-byte": r"the version byte is 2"},
    "hang": {"8.4-client-registers": r"the client HUNG: it did not exit within"},
    "crash-on-binary": {"7.3-client-content-1-mib": r"the client CRASHED \(an uncaught exception"},
}


# fault[@variant] -> (dialect the broken client speaks, {case id that must fail: a pattern its message must
# contain}); faults of 2023A repeated in another dialect are written FAULT@DIALECT
CAUGHT_IN_DIALECT: dict[str, tuple[str, dict[str, str]]] = {
    "total-first": ("2024A", {"18.2-client-packets": r"the total-first reading"}),
    "from-0": ("2024C", {"18.2-client-packets": r"the from-0 reading"}),
    "per-packet-encryption": ("2024A", {"18.2-client-packets": r"the per-packet-encryption reading"}),
    "per-packet-iv": (
        "2024C",
        {"18.2-client-packets": r"each packet decrypts on its own \(packets 2 to 3 each start a new CBC"},
    ),
    "per-packet-content-size": ("2024C", {"18.2-client-packets": r"the per-packet-content-size reading"}),
    "aes-128": (
        "2024C",
        {"18.6-client-aes-256": r"aes-128-in-2024 reading: it encrypts with only the first 16"},
    ),
    "reconnect-in-2022C": (
        "2022C",
        {"17.4-client-2022c-returning": r"1102 \(RECONNECT\).*a reconnect 2022C does not"},
    ),
    "2023-responses": (
        "2024C",
        {"18.4-client-2024-response-codes": r"mixed dialect: 2024 request codes with 2023A"},
    ),
    "no-retry-2107@2022C": ("2022C", {"8.4-client-2107-retries": r"GIVES UP ON THE FIRST a close"}),
}
DIALECT_NAMES = ("2022C", "2023A", "2023C", "2024A", "2024C")


CAUGHT_ON_FIRST_ATTEMPT = {
    "big-endian",
    "wrong-content-size",
    "version-2",
    "no-padding",
    "crash-on-binary",
    "retry-forever",
}


def run_client_suite(command: str, tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    """`pytest conformance --bp-client-cmd COMMAND` in a subprocess; (exit code, JSON report, output)."""
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    suite = [sys.executable, "-m", "pytest", "conformance", "--bp-client-cmd", command]
    suite += [REPORT_OPTION, str(report), "-p", "no:cacheprovider", "-q", *args]
    done = subprocess.run(suite, cwd=ROOT, capture_output=True, text=True, timeout=SUITE_TIMEOUT_S)
    data = json.loads(report.read_text()) if report.exists() else {}
    return done.returncode, data, done.stdout + done.stderr


def outcomes(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in report.get("cases", [])}


def test_reference_client_passes_every_case(tmp_path: Path) -> None:
    """Every client case passes against `backup-client`; only client cases run in client mode."""
    code, report, output = run_client_suite(REFERENCE, tmp_path)
    rows = outcomes(report)
    assert passed_or_not_applicable(rows) == {}, output[-3000:]
    assert code == 0, output[-3000:]
    assert report["verdict"] == "CONFORMANT"
    assert all("-client-" in case_id for case_id in rows), sorted(rows)
    assert {"8.4-client-crc-gives-up", "7.3-client-content-8-mib", "2.4-client-silent-server"} <= set(rows)
    assert "client dialect (--bp-dialect auto): the client speaks 2023A" in output


def passed_or_not_applicable(rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The rows that neither passed nor were skipped as not applying to the dialect."""
    return {
        case_id: row["message"][:600]
        for case_id, row in rows.items()
        if row["outcome"] != "passed"
        and not (row["outcome"] == "skipped" and "not in dialect" in row["message"])
    }


@pytest.mark.parametrize("dialect", DIALECT_NAMES)
def test_reference_client_dialect_detected(dialect: str, tmp_path: Path) -> None:
    """Under --bp-dialect auto the dialect of `backup-client --dialect D` is found and said at the top;
    the dialect cases pass (or do not apply)."""
    command = f"{REFERENCE} --dialect {dialect}"
    code, report, output = run_client_suite(command, tmp_path, "-k", "c17")
    assert f"client dialect (--bp-dialect auto): the client speaks {dialect}," in output, output[-3000:]
    rows = outcomes(report)
    assert passed_or_not_applicable(rows) == {}, output[-3000:]
    assert rows["17.1-client-dialect"]["outcome"] == "passed"
    assert code == 0


@pytest.mark.slow
@pytest.mark.parametrize("dialect", DIALECT_NAMES)
def test_reference_client_passes_every_case_in_every_dialect(dialect: str, tmp_path: Path) -> None:
    """`--bp-dialect D`: every client case passes in D, or is skipped as not applying to D."""
    command = f"{REFERENCE} --dialect {dialect}"
    args = ("--bp-dialect", dialect, "--durations", "1")
    code, report, output = run_client_suite(command, tmp_path, *args)
    rows = outcomes(report)
    assert passed_or_not_applicable(rows) == {}, output[-3000:]
    assert code == 0, output[-3000:]
    assert report["verdict"] == "CONFORMANT"
    print(f"{dialect}: {output.strip().splitlines()[-1]}")  # the run time of the dialect


def test_client_speaking_no_dialect_is_one_finding(tmp_path: Path) -> None:
    """A client whose first request code is in no dialect: one failed case, the others not run."""
    fake = tmp_path / "foreign.py"
    fake.write_text(
        "import socket\n"
        "host, port = open('transfer.info').read().split()[0].rsplit(':', 1)\n"
        "s = socket.create_connection((host, int(port)))\n"
        "s.sendall(bytes(16) + bytes([3]) + (12345).to_bytes(2, 'little') + bytes(4))\n"
        "s.recv(100)\n"
    )
    code, report, output = run_client_suite(
        f"{shlex.quote(sys.executable)} {shlex.quote(str(fake))}", tmp_path
    )
    rows = outcomes(report)
    assert list(rows) == ["17.1-client-dialect"], output[-3000:]
    assert rows["17.1-client-dialect"]["outcome"] == "failed"
    assert "first request code 12345 belongs to no dialect" in rows["17.1-client-dialect"]["message"]
    assert code == 1


def test_unknown_dialect_is_a_usage_error(tmp_path: Path) -> None:
    """--bp-dialect with an unknown name: pytest's usage error (exit 4), naming the known ones."""
    code, _, output = run_client_suite(f"{REFERENCE}", tmp_path, "--bp-dialect", "2019Z")
    assert code == 4
    assert "unknown dialect '2019Z'; known: 2022C, 2023A, 2023C, 2024A, 2024C or auto" in output


@pytest.mark.parametrize("fault", sorted(CAUGHT_IN_DIALECT))
def test_broken_dialect_client_is_caught(fault: str, tmp_path: Path) -> None:
    """Each dialect fault fails its MUST case (run in the broken client's dialect, detected under
    auto) with a message naming the reading or the fault."""
    dialect, expected = CAUGHT_IN_DIALECT[fault]
    name = fault.partition("@")[0]
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(BROKEN))} --dialect {dialect} --fault {name}"
    command += " --timeout 2 --retries 0"
    code, report, output = run_client_suite(
        command, tmp_path, "--bp-dialect", dialect, "-k", " or ".join(expected)
    )
    rows = outcomes(report)
    for case_id, pattern in expected.items():
        assert rows[case_id]["outcome"] == "failed", output[-3000:]
        assert rows[case_id]["level"] == "MUST"
        assert re.search(pattern, rows[case_id]["message"]), rows[case_id]["message"][:3000]
    assert code == 1


@pytest.mark.parametrize("dialect", ["2022C", "2024C"])
def test_broken_client_without_fault_passes_the_dialect_cases(dialect: str, tmp_path: Path) -> None:
    """The broken client with no fault passes the dialect cases used above in its dialect."""
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(BROKEN))} --dialect {dialect} --fault none"
    code, report, output = run_client_suite(command + " --timeout 2", tmp_path, "-k", "c17")
    rows = outcomes(report)
    assert passed_or_not_applicable(rows) == {}, output[-3000:]
    assert f"the client speaks {dialect}" in output
    assert code == 0


def test_client_cases_are_deselected_without_client_mode(tmp_path: Path) -> None:
    """Without --bp-client-cmd the client cases are deselected (and the server cases stay)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance", "--collect-only", "-p", "no:cacheprovider", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT_S,
    )
    assert "4.1-register-new" in done.stdout, done.stdout[-2000:]
    assert "8.4-client-registers" not in done.stdout and "7.3-client-content-" not in done.stdout


@pytest.mark.parametrize("fault", sorted(CAUGHT_BY))
def test_broken_client_is_caught(fault: str, tmp_path: Path) -> None:
    """Each fault fails its MUST case with a message naming it; the run exits non-zero."""
    expected = CAUGHT_BY[fault]
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(BROKEN))} --fault {fault} --timeout 2"
    args = ["--bp-dialect", "2023A", "-k", " or ".join(expected)]  # its dialect: no detection run
    if fault == "hang":
        args += ["--bp-client-timeout", "4"]
    if fault in CAUGHT_ON_FIRST_ATTEMPT:
        command += " --retries 0"  # the fault shows on the first attempt; retrying only costs time
    code, report, output = run_client_suite(command, tmp_path, *args)
    rows = outcomes(report)
    for case_id, pattern in expected.items():
        assert rows[case_id]["outcome"] == "failed", output[-3000:]
        assert rows[case_id]["level"] == "MUST"
        assert re.search(pattern, rows[case_id]["message"]), rows[case_id]["message"][:3000]
        assert "--- run 1:" in rows[case_id]["message"]  # the evidence: output tail, folder, conversation
    assert code == 1
    assert report["verdict"] == "NOT CONFORMANT"


def test_broken_client_without_fault_passes_the_cases_that_catch_the_others(tmp_path: Path) -> None:
    """The broken client with no fault passes every case used above: the faults alone fail them."""
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(BROKEN))} --fault none --timeout 2"
    selection = sorted({case_id for cases in CAUGHT_BY.values() for case_id in cases})
    code, report, output = run_client_suite(
        command, tmp_path, "--bp-dialect", "2023A", "-k", " or ".join(selection)
    )
    rows = outcomes(report)
    assert set(selection) <= set(rows)
    failed = {case_id: row["message"][:600] for case_id, row in rows.items() if row["outcome"] != "passed"}
    assert failed == {}, output[-3000:]
    assert code == 0


def test_client_of_another_dialect_is_a_finding_not_a_suite_error(tmp_path: Path) -> None:
    """A 2023A client judged as 2022C: its 1103 (no client_id in the payload) is a failed MUST case
    naming the malformed request, not an error of the suite."""
    _, report, output = run_client_suite(REFERENCE, tmp_path, "--bp-dialect", "2022C", "-k", "crc-match")
    row = outcomes(report)["8.4-client-crc-match"]
    assert row["outcome"] == "failed", output[-3000:]
    assert "a malformed request: [client_id_mismatch]" in row["message"]


def test_client_retrying_timeouts_is_named_by_the_silent_server_case(tmp_path: Path) -> None:
    """The SHOULD case 2.4-client-silent-server: the broken client without a fault gives up after
    one response timeout and passes; the retry-timeouts fault is a warning naming the reading."""
    broken = f"{shlex.quote(sys.executable)} {shlex.quote(str(BROKEN))} --timeout 0.5"
    args = ("--bp-dialect", "2023A", "-k", "silent")
    _, report, output = run_client_suite(f"{broken} --fault none", tmp_path, *args)
    assert outcomes(report)["2.4-client-silent-server"]["outcome"] == "passed", output[-3000:]
    code, report, output = run_client_suite(f"{broken} --fault retry-timeouts", tmp_path, *args)
    row = outcomes(report)["2.4-client-silent-server"]
    assert row["outcome"] == "warning", output[-3000:]
    assert "it connected 4 times: the RETRY-TIMEOUTS reading" in row["message"]
    assert report["verdict"] == "CONFORMANT" and code == 0  # a SHOULD: counted with --bp-strict


@pytest.mark.slow
def test_listen_mode_waits_for_a_client_started_by_hand(tmp_path: Path) -> None:
    """--bp-client-listen prints the working folder and transfer.info; a client run there passes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    report = tmp_path / "report.json"
    suite = [sys.executable, "-m", "pytest", "conformance", "--bp-client-listen", f"127.0.0.1:{port}"]
    suite += ["-k", "8.4-client-registers", REPORT_OPTION, str(report), "-p", "no:cacheprovider", "-q"]
    process = subprocess.Popen(suite, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    prompts: list[str] = []
    try:
        assert process.stderr is not None
        prompt: list[str] = []
        for line in process.stderr:  # answers each prompt as a user would; ends at the suite's EOF
            prompt.append(line)
            if "delete any me.info" not in line:
                continue
            text, prompt = "".join(prompt), []
            prompts.append(text)
            match = re.search(r"copy the files of (\S+) next to your client", text)
            assert match, text
            assert f"127.0.0.1:{port}" in text and "alice" in text
            client = [sys.executable, "-m", "reference_client", "--dir", match[1], "--timeout", "5"]
            assert subprocess.run(client, capture_output=True, timeout=60).returncode == 0
        process.communicate(timeout=SUITE_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
    # --bp-dialect auto: one run to detect the client's dialect, then the case's own run.
    assert len(prompts) == 2, prompts
    assert "detecting your client's dialect" in prompts[0]
    assert "=== 8.4-client-registers: start your client now" in prompts[1]
    rows = outcomes(json.loads(report.read_text()))
    assert rows["8.4-client-registers"]["outcome"] == "passed", rows
    assert process.returncode == 0


def test_relative_paths_in_the_command_are_made_absolute(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client runs in the case's folder: words naming existing relative paths become absolute."""
    from conformance.clients.plugin import absolute_paths

    monkeypatch.chdir(ROOT)
    assert absolute_paths("python tests/broken_clients/client.py --fault x") == f"python {BROKEN} --fault x"
    assert absolute_paths("backup-client --timeout 5") == "backup-client --timeout 5"
    assert absolute_paths("./no-such-client --dir a/b") == "./no-such-client --dir a/b"


def test_client_requirements_are_quoted_from_the_spec() -> None:
    """Every client case's requirement occurs in spec/protocol.md or spec/dialects.md (whitespace
    aside), as for servers."""
    for module in sorted((ROOT / "conformance" / "clients").glob("test_*.py")):
        importlib.import_module(f"conformance.clients.{module.stem}")
    spec = " ".join((ROOT / "spec" / "protocol.md").read_text().split())
    spec += " " + " ".join((ROOT / "spec" / "dialects.md").read_text().split())
    clients = {case_id: info for case_id, info in CASES.items() if "-client-" in case_id}
    assert len(clients) > 25
    quoted = {case_id: info for case_id, info in clients.items() if not case_id.startswith("15")}
    assert [case_id for case_id, info in quoted.items() if info.requirement not in spec] == []
