"""NumPy arrays to and from ``tensorflow.TensorProto``, without TensorFlow.

The wire rules follow ``tensorflow/core/framework/tensor.proto``: a tensor's values are either
packed in ``tensor_content`` (raw bytes in host order, row-major) or listed in the typed repeated
field for its dtype (``float_val``, ``int_val`` ...); a typed field holding a single value fills the
whole shape. Numeric arrays are always written with ``tensor_content`` (one ``memcpy``, no
per-element Python), strings with ``string_val``. This is what ``tf.make_tensor_proto`` and
``tf.make_ndarray`` do, at a fraction of the cost and without the TensorFlow runtime.
"""

from __future__ import annotations

import numpy as np

from serving_api.protos import tensor_pb2, tensor_shape_pb2, types_pb2

_NUMPY_BY_DTYPE: dict[int, np.dtype] = {
    types_pb2.DT_FLOAT: np.dtype(np.float32),
    types_pb2.DT_DOUBLE: np.dtype(np.float64),
    types_pb2.DT_HALF: np.dtype(np.float16),
    types_pb2.DT_INT8: np.dtype(np.int8),
    types_pb2.DT_INT16: np.dtype(np.int16),
    types_pb2.DT_INT32: np.dtype(np.int32),
    types_pb2.DT_INT64: np.dtype(np.int64),
    types_pb2.DT_UINT8: np.dtype(np.uint8),
    types_pb2.DT_UINT16: np.dtype(np.uint16),
    types_pb2.DT_UINT32: np.dtype(np.uint32),
    types_pb2.DT_UINT64: np.dtype(np.uint64),
    types_pb2.DT_BOOL: np.dtype(np.bool_),
}
_DTYPE_BY_NUMPY: dict[np.dtype, int] = {v: k for k, v in _NUMPY_BY_DTYPE.items()}

# The repeated field that carries each dtype's values when tensor_content is empty.
_VALUE_FIELD: dict[int, str] = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_HALF: "half_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
}


class TensorConversionError(ValueError):
    """A TensorProto or array that cannot be converted (unsupported dtype, size mismatch)."""


def dtype_name(dtype: int) -> str:
    """Name of a ``tensorflow.DataType`` enum value, e.g. ``4 -> "DT_UINT8"``."""
    try:
        return types_pb2.DataType.Name(dtype)
    except ValueError:
        return f"DataType({dtype})"


def numpy_dtype(dtype: int) -> np.dtype:
    """NumPy dtype of a numeric ``tensorflow.DataType``.

    Raises:
        TensorConversionError: for DT_STRING and dtypes without a NumPy equivalent.
    """
    try:
        return _NUMPY_BY_DTYPE[dtype]
    except KeyError:
        raise TensorConversionError(f"no NumPy dtype for {dtype_name(dtype)}") from None


def to_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """Encode an array as a ``TensorProto``.

    Args:
        array: any shape. Numeric/bool dtypes are packed into ``tensor_content``; ``bytes``/``str``
            (NumPy ``S``, ``U`` or ``object``) arrays become ``DT_STRING`` with ``string_val``
            (``str`` encoded as UTF-8).

    Returns:
        The TensorProto, with ``dtype`` and ``tensor_shape`` set.

    Raises:
        TensorConversionError: unsupported dtype (complex, datetime ...).
    """
    array = np.asarray(array)
    proto = tensor_pb2.TensorProto(
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(n)) for n in array.shape]
        )
    )
    if array.dtype.kind in ("S", "U", "O"):
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(
            v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in array.reshape(-1)
        )
        return proto
    native = array.dtype.newbyteorder("=")
    dtype = _DTYPE_BY_NUMPY.get(native)
    if dtype is None:
        raise TensorConversionError(f"unsupported array dtype {array.dtype}")
    proto.dtype = dtype
    proto.tensor_content = np.ascontiguousarray(array, dtype=native).tobytes()
    return proto


def shape_of(proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    """The shape of a TensorProto as a tuple of ints (``-1`` for unknown dimensions)."""
    return tuple(int(d.size) for d in proto.tensor_shape.dim)


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Decode a ``TensorProto`` into an array.

    Args:
        proto: a fully defined tensor (no unknown dimensions).

    Returns:
        ``np.ndarray`` of the proto's shape; numeric dtypes map one to one (DT_UINT8 -> uint8 ...),
        DT_STRING gives an ``object`` array of ``bytes``. The array may be a read-only view of the
        proto's bytes.

    Raises:
        TensorConversionError: unknown dimensions, unsupported dtype, or a value count that does not
            match the shape.
    """
    shape = shape_of(proto)
    if any(n < 0 for n in shape):
        raise TensorConversionError(f"tensor shape {list(shape)} has unknown dimensions")
    count = int(np.prod(shape, dtype=np.int64))
    if proto.dtype == types_pb2.DT_STRING:
        values = list(proto.string_val)
        return _fill(np.array(values, dtype=object), count, shape)
    np_dtype = numpy_dtype(proto.dtype)
    if proto.tensor_content:
        if len(proto.tensor_content) != count * np_dtype.itemsize:
            raise TensorConversionError(
                f"tensor_content has {len(proto.tensor_content)} bytes; shape {list(shape)} of "
                f"{dtype_name(proto.dtype)} needs {count * np_dtype.itemsize}"
            )
        return np.frombuffer(proto.tensor_content, dtype=np_dtype).reshape(shape)
    field = getattr(proto, _VALUE_FIELD[proto.dtype])
    if proto.dtype == types_pb2.DT_HALF:
        values = np.array(field, dtype=np.uint16).view(np.float16)
    else:
        values = np.array(field, dtype=np_dtype)
    return _fill(values, count, shape)


def _fill(values: np.ndarray, count: int, shape: tuple[int, ...]) -> np.ndarray:
    if values.size == count:
        return values.reshape(shape)
    if values.size == 1:
        return np.full(shape, values[0], dtype=values.dtype)
    if values.size == 0:
        return (
            np.zeros(shape, dtype=values.dtype)
            if values.dtype != object
            else np.full(shape, b"", dtype=object)
        )
    raise TensorConversionError(f"{values.size} values cannot fill shape {list(shape)}")
