"""The sans-I/O core (`backupproto` minus `backupproto.io`) imports no I/O, no suite, no program.

Every import statement of every core module is read from its source (including imports inside
functions), relative imports resolved; none may name a forbidden module or one of its sub-modules.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "backupproto"
IO_LAYER = PACKAGE / "io"
FORBIDDEN = (
    "socket",
    "ssl",
    "threading",
    "_thread",
    "selectors",
    "select",
    "asyncio",
    "subprocess",
    "multiprocessing",
    "concurrent",
    "sqlite3",
    "tempfile",
    "shutil",
    "conformance",
    "reference_server",
    "reference_client",
    "backupproto.io",
)
DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
"""A string that may name a module for `importlib.import_module` (a lazy subcommand table)."""


def core_modules(package: Path = PACKAGE) -> list[Path]:
    """The source files of the sans-I/O core."""
    return sorted(path for path in package.rglob("*.py") if IO_LAYER not in path.parents)


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, and of every dotted-name string."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    name = module_name(path, package)
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Constant) and DOTTED_NAME.fullmatch(str(node.value)):
            found.append((node.lineno, str(node.value)))
    return found


PROGRAM_ENTRY = "backupproto.__main__"
"""``python -m backupproto`` is a program, not part of the core: it may name (by string, imported
lazily) the I/O layer's subcommand modules, and nothing else that is forbidden."""


def forbidden_imports(path: Path, package: Path = PACKAGE) -> list[str]:
    """'file:line imports X' for each forbidden import of one file."""
    forbidden = FORBIDDEN
    if module_name(path, package) == PROGRAM_ENTRY:
        forbidden = tuple(bad for bad in FORBIDDEN if bad != "backupproto.io")
    return [
        f"{path.relative_to(package.parent)}:{line} imports {target}"
        for line, target in imported_names(path, package)
        if any(target == bad or target.startswith(bad + ".") for bad in forbidden)
    ]


def test_the_core_is_found() -> None:
    names = {module_name(path) for path in core_modules()}
    assert {"backupproto.engine", "backupproto.schemas", "backupproto.sessions.splitter"} <= names
    assert not any(name.startswith("backupproto.io") for name in names)


@pytest.mark.parametrize("path", core_modules(), ids=lambda path: module_name(path))
def test_core_module_imports_no_io(path: Path) -> None:
    assert forbidden_imports(path) == []


def test_the_check_sees_relative_and_nested_imports(tmp_path: Path) -> None:
    """The walker itself: a nested relative import of the I/O layer and a lazy socket import are caught."""
    package = tmp_path / "backupproto"
    (package / "sub").mkdir(parents=True)
    (package / "sub" / "__init__.py").write_text("")
    bad = package / "sub" / "bad.py"
    bad.write_text(
        "from ..io import channel\n\ndef later():\n    import socket\n\nTABLE = {'x': 'conformance.replay'}\n"
    )
    assert forbidden_imports(bad, package) == [
        "backupproto/sub/bad.py:1 imports backupproto.io",
        "backupproto/sub/bad.py:1 imports backupproto.io.channel",
        "backupproto/sub/bad.py:4 imports socket",
        "backupproto/sub/bad.py:6 imports conformance.replay",
    ]


def test_a_subcommand_loads_only_its_own_modules() -> None:
    """``python -m backupproto cksum`` imports neither the other subcommands nor the protocol modules."""
    script = (
        "import runpy, sys\n"
        "sys.argv = ['backupproto', 'cksum', '/dev/null']\n"
        "try:\n"
        "    runpy.run_module('backupproto', run_name='__main__', alter_sys=True)\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('MODULES', *sorted(m for m in sys.modules if m.split('.')[0] in "
        "('backupproto', 'conformance', 'construct', 'Crypto')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = done.stdout.splitlines()[-1].split()[1:]
    assert "backupproto.io.cli_cksum" in loaded
    assert [name for name in loaded if name not in LIGHT] == []


LIGHT = (
    "backupproto",
    "backupproto.__main__",
    "backupproto.subcommands",
    "backupproto.io",
    "backupproto.io.cli_cksum",
    "backupproto.cksum",
)
"""What the cksum subcommand may load (the other engineer's cksum modules excepted)."""
