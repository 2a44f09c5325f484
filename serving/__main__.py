"""``python -m serving [tensorflow_model_server flags]``: run the local model server."""

import sys

from serving.server import run

if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
