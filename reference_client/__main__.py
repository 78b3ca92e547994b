"""Entry point of `backup-client` and `python -m reference_client`."""

from __future__ import annotations

import gc
import sys


def main() -> int:
    """Run the command line client; the exit status is returned (console scripts exit with it)."""
    from .cli import main as cli_main

    # The modules just imported live as long as the process: the garbage collector need not
    # walk them again, in the run or in the interpreter's shutdown (18 ms of a 23 ms exit here).
    gc.freeze()
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
