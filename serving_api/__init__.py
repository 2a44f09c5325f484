"""TF Serving's gRPC API as the gateway, the model server and export use it.

``serving_api.protos``: the ``tensorflow-serving-api`` messages and stubs, loaded without the
TensorFlow runtime. ``serving_api.tensors``: NumPy <-> ``TensorProto``. No TensorFlow import here.
"""
