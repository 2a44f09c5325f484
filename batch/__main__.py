"""``python -m batch run|history|feedback [flags]``: the nightly job, its history, corrections."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence

from batch.runner import run
from batch.settings import EXIT_UNAVAILABLE, ConfigError, parse_settings

_TOOLS = {"history": "batch.history", "feedback": "batch.feedback"}
"""Sub-commands that read what the runs left behind (their own ``--help``)."""


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
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in _TOOLS:
        module = importlib.import_module(_TOOLS[args[0]])
        return module.main(args[1:])
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
