"""``python -m serving`` / ``fashion-serving [tensorflow_model_server flags]``: the local server."""

import sys

from serving.server import run


def main(argv: list[str] | None = None) -> int:
    """The ``fashion-serving`` command.

    Args:
        argv: arguments without the program name; ``sys.argv[1:]`` if None.

    Returns:
        The server's exit status (see :func:`serving.server.run`).
    """
    return run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
