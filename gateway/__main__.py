"""Development server: ``python -m gateway --port 8080 [--host 127.0.0.1]``.

Flask's threaded development server, for local work and tests. Production runs gunicorn with
``gateway/gunicorn.conf.py``. Settings come from the environment (``gateway/settings.py``); a bad
one is reported as one line on stderr and exit status 2, before anything starts.
"""

from __future__ import annotations

import argparse

from buildinfo import version_line
from gateway.app import create_app
from gateway.settings import Settings


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until interrupted.

    Args:
        argv: arguments without the program name; ``sys.argv[1:]`` if None.

    Raises:
        SystemExit: code 2 for bad arguments or a bad setting (one line on stderr).
    """
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default %(default)s)")
    parser.add_argument("--version", action="version", version=version_line("fashion-gateway"))
    args = parser.parse_args(argv)
    settings = Settings.from_env_or_exit()
    create_app(settings).run(
        host=args.host, port=args.port, threaded=True, debug=False, use_reloader=False
    )


if __name__ == "__main__":
    main()
