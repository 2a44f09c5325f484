"""Message classes for TF Serving's batching and monitoring config files.

The ``tensorflow-serving-api`` wheel ships ``ModelServerConfig`` but not the two messages that
``--batching_parameters_file`` and ``--monitoring_config_file`` hold. This module builds them at
import time from a ``FileDescriptorProto`` with TF Serving's package, message names, field names,
numbers and types, so ``text_format.Parse`` reads our config files exactly as the real server does
and rejects an unknown field (a typo) the same way.

Sources (facts only: names, numbers, types):
- ``tensorflow_serving/servables/tensorflow/session_bundle_config.proto``: ``BatchingParameters``
  (fields 1-5 are ``google.protobuf.Int64Value``/``StringValue`` wrappers, 6 ``repeated int64``,
  7 ``bool``). Later TF Serving releases append more optional fields; only these seven are known
  here, so a config using a newer field is refused by this schema (not by the real server).
- ``tensorflow_serving/config/monitoring_config.proto``: ``PrometheusConfig`` (``bool enable = 1``,
  ``string path = 2``) and ``MonitoringConfig`` (``PrometheusConfig prometheus_config = 1``).
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

_PACKAGE = "tensorflow.serving"
_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, type_name: str = "", repeated: bool = False):
    field = _F(
        name=name,
        number=number,
        type=kind,
        label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
    )
    if type_name:
        field.type_name = type_name
    return field


def _build_file() -> descriptor_pb2.FileDescriptorProto:
    int64_value = ".google.protobuf.Int64Value"
    string_value = ".google.protobuf.StringValue"
    batching = descriptor_pb2.DescriptorProto(
        name="BatchingParameters",
        field=[
            _field("max_batch_size", 1, _F.TYPE_MESSAGE, int64_value),
            _field("batch_timeout_micros", 2, _F.TYPE_MESSAGE, int64_value),
            _field("max_enqueued_batches", 3, _F.TYPE_MESSAGE, int64_value),
            _field("num_batch_threads", 4, _F.TYPE_MESSAGE, int64_value),
            _field("thread_pool_name", 5, _F.TYPE_MESSAGE, string_value),
            _field("allowed_batch_sizes", 6, _F.TYPE_INT64, repeated=True),
            _field("pad_variable_length_inputs", 7, _F.TYPE_BOOL),
        ],
    )
    prometheus = descriptor_pb2.DescriptorProto(
        name="PrometheusConfig",
        field=[_field("enable", 1, _F.TYPE_BOOL), _field("path", 2, _F.TYPE_STRING)],
    )
    monitoring = descriptor_pb2.DescriptorProto(
        name="MonitoringConfig",
        field=[_field("prometheus_config", 1, _F.TYPE_MESSAGE, f".{_PACKAGE}.PrometheusConfig")],
    )
    return descriptor_pb2.FileDescriptorProto(
        # A name of our own: the real files' names are not registered in this process.
        name="serving/config_schema.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=[wrappers_pb2.DESCRIPTOR.name],
        message_type=[batching, prometheus, monitoring],
    )


def _messages() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))
    file = pool.Add(_build_file())
    return {
        name: message_factory.GetMessageClass(file.message_types_by_name[name])
        for name in ("BatchingParameters", "PrometheusConfig", "MonitoringConfig")
    }


_CLASSES = _messages()

BatchingParameters = _CLASSES["BatchingParameters"]
"""``tensorflow.serving.BatchingParameters``: the ``--batching_parameters_file`` message."""

PrometheusConfig = _CLASSES["PrometheusConfig"]
"""``tensorflow.serving.PrometheusConfig``."""

MonitoringConfig = _CLASSES["MonitoringConfig"]
"""``tensorflow.serving.MonitoringConfig``: the ``--monitoring_config_file`` message."""
