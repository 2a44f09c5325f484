"""``python -m batch run|history|feedback [flags]``: the nightly job, its history, corrections."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence

from batch.runner import run
from batch.settings import EXIT_CONFIG, ConfigError, parse_settings

_TOOLS = {"history": "batch.history", "feedback": "batch.feedback"}
"""Sub-commands that read what the runs left behind (their own ``--help``)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the command line and runs once.

    Args:
        argv: arguments after the program name (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 all filed, 1 some quarantined or left for retry, 75 retry later
        (gateway unavailable, another run holding the lock), 78 bad configuration (``--help``).
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
        settings.validate()  # before the per-run log exists: one line, nothing created
    except ConfigError as exc:
        print(f"fashion-batch: bad configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    result = run(settings)
    print(result.message, file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
