"""Entry point of `backup-client` and `python -m reference_client`."""

from __future__ import annotations

import sys


def main() -> int:
    """Run the command line client; the exit status is returned (console scripts exit with it)."""
    from .cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
