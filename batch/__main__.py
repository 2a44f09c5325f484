"""``python -m batch run [flags]``: one run of the nightly job; exit code 0, 1 or 2."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from batch.runner import run
from batch.settings import EXIT_UNAVAILABLE, ConfigError, parse_settings


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the command line and runs once.

    Args:
        argv: arguments after the program name (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 all filed, 1 some quarantined or left for retry, 2 gateway unavailable,
        bad configuration or another run holding the lock (see ``--help``).
    """
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        _command, settings = parse_settings(argv, os.environ)
    except ConfigError as exc:
        logging.getLogger("batch").error("bad configuration: %s", exc)
        return EXIT_UNAVAILABLE
    result = run(settings)
    print(result.message, file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
