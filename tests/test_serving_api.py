"""serving_api: the TensorProto codec against TensorFlow's own, and message loading without TF."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from serving_api import protos, tensors

NUMERIC = [
    np.float32,
    np.float64,
    np.float16,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
]


@pytest.mark.parametrize("dtype", NUMERIC)
def test_numeric_round_trip_is_exact(dtype):
    array = (np.arange(24).reshape(2, 3, 4) % 7).astype(dtype)
    proto = tensors.to_tensor_proto(array)
    assert tensors.shape_of(proto) == (2, 3, 4)
    assert len(proto.tensor_content) == array.nbytes
    back = tensors.to_ndarray(proto)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, array)


def test_uint8_image_batch_uses_one_byte_per_pixel():
    batch = np.full((2, 224, 224, 3), 200, dtype=np.uint8)
    proto = tensors.to_tensor_proto(batch)
    assert proto.dtype == protos.types_pb2.DT_UINT8
    assert len(proto.tensor_content) == 2 * 224 * 224 * 3


def test_big_endian_input_is_written_in_host_order():
    array = np.array([1.0, 2.0], dtype=">f4")
    back = tensors.to_ndarray(tensors.to_tensor_proto(array))
    np.testing.assert_array_equal(back, np.array([1.0, 2.0], dtype=np.float32))


def test_strings_round_trip_as_bytes():
    labels = np.array([["hat", "t-shirt"], ["dress", "ß"]], dtype=object)
    proto = tensors.to_tensor_proto(labels)
    assert proto.dtype == protos.types_pb2.DT_STRING
    assert list(proto.string_val) == [b"hat", b"t-shirt", b"dress", "ß".encode()]
    back = tensors.to_ndarray(proto)
    assert back.shape == (2, 2)
    assert back[1, 1] == "ß".encode()


def test_typed_fields_and_single_value_fill():
    proto = protos.tensor_pb2.TensorProto(dtype=protos.types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add(size=2)
    proto.tensor_shape.dim.add(size=2)
    proto.float_val.append(0.5)
    np.testing.assert_array_equal(tensors.to_ndarray(proto), np.full((2, 2), 0.5, np.float32))
    proto.float_val.extend([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(tensors.to_ndarray(proto), [[0.5, 1.0], [2.0, 3.0]])


def test_mismatched_content_is_refused():
    proto = tensors.to_tensor_proto(np.zeros((2, 3), np.float32))
    proto.tensor_shape.dim[0].size = 3
    with pytest.raises(tensors.TensorConversionError, match="needs 36"):
        tensors.to_ndarray(proto)
    proto.tensor_shape.dim[0].size = -1
    with pytest.raises(tensors.TensorConversionError, match="unknown dimensions"):
        tensors.to_ndarray(proto)


def test_unsupported_dtype_is_refused():
    with pytest.raises(tensors.TensorConversionError):
        tensors.to_tensor_proto(np.zeros(2, np.complex64))
    assert tensors.dtype_name(protos.types_pb2.DT_UINT8) == "DT_UINT8"


def test_codec_agrees_with_tensorflow():
    import tensorflow as tf

    array = np.random.default_rng(0).random((3, 5)).astype(np.float32)
    np.testing.assert_array_equal(tf.make_ndarray(tensors.to_tensor_proto(array)), array)
    np.testing.assert_array_equal(tensors.to_ndarray(tf.make_tensor_proto(array)), array)
    strings = tf.make_tensor_proto([b"a", b"bc"])
    assert list(tensors.to_ndarray(strings)) == [b"a", b"bc"]


def test_messages_load_without_runtime_and_real_tensorflow_still_imports_after():
    code = textwrap.dedent(
        """
        import sys
        from serving_api import protos
        request = protos.predict_pb2.PredictRequest()
        request.model_spec.name = "fashion"
        assert not protos.runtime_loaded(), sorted(sys.modules)
        assert "tensorflow" not in sys.modules
        import tensorflow as tf
        assert protos.runtime_loaded()
        assert tf.make_tensor_proto([1]).dtype == protos.types_pb2.DT_INT32
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
