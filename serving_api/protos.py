"""TF Serving's protocol messages and gRPC stubs, importable without the TensorFlow runtime.

The ``tensorflow-serving-api`` wheel's generated modules import
``tensorflow.core.framework.*_pb2``. Importing any ``tensorflow.*`` module first executes
``tensorflow/__init__.py``, which loads the whole runtime (measured here: ~4 s and ~640 MB
resident). The generated ``*_pb2`` modules themselves need only ``protobuf``. So, when TensorFlow
is not already loaded, this module registers a bare namespace module for the ``tensorflow`` package
(its ``__path__`` pointing at the installed package folder, or at a proto-only copy in the gateway
image), imports the ``*_pb2`` modules through it, then removes the bare module again so that a
later real ``import tensorflow`` in the same process still runs the real ``__init__`` and finds
these already-imported ``*_pb2`` modules in ``sys.modules``.

When TensorFlow is already imported (the model server, export), the stock modules are used as is.

Usage::

    from serving_api import protos
    request = protos.predict_pb2.PredictRequest()
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from collections.abc import Iterator


@contextlib.contextmanager
def _without_runtime() -> Iterator[None]:
    """Inside this block, ``tensorflow.*`` submodules load without ``tensorflow/__init__``."""
    if "tensorflow" in sys.modules:  # the real package is loaded already: use it as it is
        yield
        return
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the generated TF Serving messages need the 'tensorflow' package folder "
            "(pip install tensorflow-serving-api, or the gateway image's proto-only copy)"
        )
    bare = types.ModuleType("tensorflow", "namespace for generated protobuf modules only")
    bare.__path__ = list(spec.submodule_search_locations)
    sys.modules["tensorflow"] = bare
    try:
        yield
    finally:
        # Give the name back: a later `import tensorflow` then loads the real package, which reuses
        # the *_pb2 modules already in sys.modules (same files, same descriptors).
        if sys.modules.get("tensorflow") is bare:
            del sys.modules["tensorflow"]


with _without_runtime():
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_management_pb2,
        model_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_log_pb2,
        prediction_service_pb2_grpc,
    )
    from tensorflow_serving.config import model_server_config_pb2

__all__ = [
    "get_model_metadata_pb2",
    "get_model_status_pb2",
    "meta_graph_pb2",
    "model_management_pb2",
    "model_pb2",
    "model_server_config_pb2",
    "model_service_pb2_grpc",
    "predict_pb2",
    "prediction_log_pb2",
    "prediction_service_pb2_grpc",
    "runtime_loaded",
    "tensor_pb2",
    "tensor_shape_pb2",
    "types_pb2",
]

RUNTIME_MODULES = ("tensorflow.python", "tensorflow.python.pywrap_tensorflow", "keras")
"""Modules whose presence in ``sys.modules`` means the TensorFlow runtime was loaded."""


def runtime_loaded() -> bool:
    """Whether this process has loaded the TensorFlow runtime (not just generated messages).

    Returns:
        True if any of :data:`RUNTIME_MODULES` is in ``sys.modules``.
    """
    return any(name in sys.modules for name in RUNTIME_MODULES)
