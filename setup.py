"""Build step beyond pyproject.toml: copy spec/ into the wheel as backupproto/spec/.

Every failure message of the library and the suite cites the spec, so an installed package
carries it; `backupproto.specification.spec_root()` finds it there (or in a checkout).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SPEC = Path(__file__).resolve().parent / "spec"


class BuildPyWithSpec(build_py):
    """build_py, then spec/ copied to <build>/backupproto/spec/ (not in editable builds)."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            shutil.copytree(SPEC, Path(self.build_lib) / "backupproto" / "spec", dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithSpec})
