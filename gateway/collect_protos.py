"""Copy the generated protobuf modules the gateway needs out of a TensorFlow install.

Used by Dockerfile.gateway's builder stage: ``python -m gateway.collect_protos /protos``. It imports
:mod:`serving_api.protos` (which loads the ``*_pb2`` modules through a bare ``tensorflow``
namespace, never the runtime), then copies exactly the files that import loaded, with the
``__init__.py`` of their sub-packages, to ``<target>/`` laid out like ``site-packages``. The top
``tensorflow/__init__.py`` (the runtime loader) is deliberately not copied: in the final image
``tensorflow`` is a namespace package holding only generated messages.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

_ROOTS = ("tensorflow", "tensorflow_serving")


def collect(target: Path) -> list[Path]:
    """Copy the loaded generated modules below ``target``.

    Args:
        target: destination folder (a ``site-packages``-like root); created if missing.

    Returns:
        The copied files, relative to ``target``.

    Raises:
        RuntimeError: the TensorFlow runtime was loaded, or a loaded module under ``tensorflow`` is
            not a generated ``*_pb2``/``*_pb2_grpc`` module or an empty package ``__init__``.
    """
    from serving_api import protos

    if protos.runtime_loaded():
        raise RuntimeError("the TensorFlow runtime is loaded; run this in a fresh interpreter")
    copied = []
    for name, module in sorted(sys.modules.items()):
        if name.split(".")[0] not in _ROOTS or name == "tensorflow":
            continue
        source = Path(getattr(module, "__file__", "") or "")
        if not source.is_file():
            continue
        generated = source.name.endswith(("_pb2.py", "_pb2_grpc.py"))
        if not generated and not (source.name == "__init__.py" and source.stat().st_size == 0):
            raise RuntimeError(f"{name} ({source}) is not a generated module")
        parts = name.split(".")
        package = parts if source.name == "__init__.py" else parts[:-1]
        destination = target.joinpath(*package, source.name)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
        copied.append(destination.relative_to(target))
    return copied


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m gateway.collect_protos TARGET``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    files = collect(args.target)
    print(f"copied {len(files)} generated modules to {args.target}")


if __name__ == "__main__":
    main()
