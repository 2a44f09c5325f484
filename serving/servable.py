"""One loaded model version: TensorFlow's SavedModel loader, its signatures, and checked calls.

The model math is TensorFlow's: the version is loaded with ``tf.saved_model.load`` and run by
calling its signature functions. This module only checks a request against the signature the way
TF Serving does (``tensorflow_serving/servables/tensorflow/predict_util.cc``) and converts arrays.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import saved_model_pb2

from contract import SIGNATURE_NAME
from serving.calls import PreparedCall
from serving.errors import LoadError, ServingError, invalid_argument
from serving_api import protos, tensors

log = logging.getLogger(__name__)

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
"""TF Serving's warm-up file, relative to the version folder (TFRecord of ``PredictionLog``)."""


def _read_signature_defs(path: str) -> dict:
    pb_path = os.path.join(path, "saved_model.pb")
    try:
        with open(pb_path, "rb") as handle:
            model = saved_model_pb2.SavedModel.FromString(handle.read())
    except (OSError, DecodeError) as exc:
        raise LoadError(f"cannot read {pb_path}: {exc}") from exc
    for meta_graph in model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            # Re-parse into the serving_api message class (same descriptor, same bytes).
            return {
                key: protos.meta_graph_pb2.SignatureDef.FromString(sig.SerializeToString())
                for key, sig in meta_graph.signature_def.items()
            }
    raise LoadError(f"{pb_path} has no MetaGraph tagged 'serve'")


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(int(n)) for n in shape) + "]"


class Servable:
    """A loaded version of a model.

    Attributes:
        name: model name.
        version: version number.
        path: the version folder.
        signature_defs: signature key -> ``SignatureDef`` (as TF Serving's metadata returns them,
            including internal ones such as ``__saved_model_init_op``).
    """

    def __init__(self, name: str, version: int, path: str) -> None:
        """Load a version.

        Args:
            name: model name.
            version: version number (the folder name).
            path: the version folder.

        Raises:
            LoadError: not a SavedModel, a folder without ``variables/``, corrupt files, or a
                graph TensorFlow cannot load.
        """
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = _read_signature_defs(path)
        try:
            self._module = tf.saved_model.load(path, tags=["serve"])
        except Exception as exc:  # TensorFlow raises many types for a bad folder
            raise LoadError(f"tf.saved_model.load({path}) failed: {exc}") from exc
        self._functions = dict(self._module.signatures)
        missing = [
            k for k in self.signature_defs if not k.startswith("__") and k not in self._functions
        ]
        if missing:
            raise LoadError(f"{path}: signatures {missing} have no callable function")

    def prepare(
        self,
        signature_name: str,
        inputs: Mapping[str, protos.tensor_pb2.TensorProto],
        output_filter: Sequence[str],
    ) -> PreparedCall:
        """Check a Predict request against a signature and decode its tensors.

        Args:
            signature_name: requested key; empty = ``serving_default``.
            inputs: input alias -> TensorProto, as in ``PredictRequest.inputs``.
            output_filter: output aliases to return; empty = all.

        Returns:
            The checked call.

        Raises:
            ServingError: FAILED_PRECONDITION ``Serving signature key "x" not found.``;
                INVALID_ARGUMENT for missing/extra inputs (``input size does not match
                signature...``), unknown input alias (``input tensor alias not found in
                signature...``), unknown or duplicate output alias, undecodable tensors, and a
                dtype or shape the signature does not accept (messages as ``predict_util.cc``
                where TF Serving has one; dtype/shape messages name what the signature expects).
        """
        key = signature_name or SIGNATURE_NAME
        signature = self.signature_defs.get(key)
        if signature is None or key not in self._functions:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.'
            )
        expected = set(signature.inputs)
        sent = set(inputs)
        if len(sent) != len(expected):
            raise invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}."
            )
        arrays: dict[str, np.ndarray] = {}
        for alias, proto in inputs.items():
            info = signature.inputs.get(alias)
            if info is None:
                raise invalid_argument(
                    f"input tensor alias not found in signature: {alias}. Inputs expected to be "
                    f"in the set {{{','.join(sorted(expected))}}}."
                )
            arrays[alias] = self._decode(key, alias, info, proto)
        outputs: list[str] = []
        for alias in output_filter:
            if alias not in signature.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be "
                    f"in the set {{{','.join(sorted(signature.outputs))}}}."
                )
            if alias in outputs:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            outputs.append(alias)
        return PreparedCall(key, arrays, tuple(outputs or sorted(signature.outputs)))

    def _decode(self, signature_name: str, alias: str, info, proto) -> np.ndarray:
        want = tensors.dtype_name(info.dtype)
        if proto.dtype != info.dtype:
            raise invalid_argument(
                f"input '{alias}' has dtype {tensors.dtype_name(proto.dtype)} but signature "
                f"'{signature_name}' expects {want}"
            )
        try:
            array = tensors.to_ndarray(proto)
        except tensors.TensorConversionError as exc:
            raise invalid_argument(f"tensor parsing error: {alias}: {exc}") from exc
        if not info.tensor_shape.unknown_rank:
            dims = [d.size for d in info.tensor_shape.dim]
            if len(dims) != array.ndim or any(
                d >= 0 and d != n for d, n in zip(dims, array.shape, strict=True)
            ):
                raise invalid_argument(
                    f"input '{alias}' has shape {_shape_text(array.shape)} but signature "
                    f"'{signature_name}' expects {want} {_shape_text(dims)} (-1 = any size)"
                )
        return array

    def run(self, call: PreparedCall) -> dict[str, np.ndarray]:
        """Run a checked call through the SavedModel's signature function.

        Args:
            call: from :meth:`prepare` (or several merged along dimension 0).

        Returns:
            output alias -> array (DT_STRING outputs as ``object`` arrays of ``bytes``), only the
            aliases in ``call.outputs``.

        Raises:
            ServingError: INVALID_ARGUMENT when TensorFlow rejects the values, INTERNAL otherwise.
        """
        function = self._functions[call.signature_name]
        feed = {alias: tf.constant(array) for alias, array in call.inputs.items()}
        try:
            result = function(**feed)
        except tf.errors.InvalidArgumentError as exc:
            raise invalid_argument(exc.message) from exc
        except Exception as exc:
            raise ServingError(grpc.StatusCode.INTERNAL, str(exc)) from exc
        return {alias: result[alias].numpy() for alias in call.outputs}

    def warm_up(self) -> int:
        """Replay the version's warm-up requests (Predict only), as ``--enable_model_warmup``.

        Returns:
            The number of requests replayed (0 when the file is absent).

        Raises:
            LoadError: an unreadable file or a request that fails; TF Serving fails the load then.
        """
        path = os.path.join(self.path, WARMUP_FILE)
        if not os.path.exists(path):
            return 0
        count = 0
        try:
            for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
                entry = protos.prediction_log_pb2.PredictionLog.FromString(record)
                if entry.WhichOneof("log_type") != "predict_log":
                    continue
                request = entry.predict_log.request
                call = self.prepare(
                    request.model_spec.signature_name, request.inputs, request.output_filter
                )
                self.run(call)
                count += 1
        except (ServingError, tf.errors.OpError, ValueError) as exc:
            raise LoadError(f"warm-up of {self.name} version {self.version} failed: {exc}") from exc
        return count
