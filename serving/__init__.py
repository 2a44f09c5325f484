"""The model server: TF Serving deployment files and a local TF-Serving-compatible server.

- ``Dockerfile.serving`` + ``serving/{models,batching,monitoring}.config``: the production
  deployment on ``tensorflow/serving``.
- ``python -m serving``: the same gRPC/REST API and flags, in Python, for machines without
  Docker (``serving.server``; data plane ``serving.core``; lifecycle ``serving.manager``).
- ``serving.launcher.ModelServerProcess``: start/stop that server as a subprocess (tests, jobs).

Importing this package loads nothing heavy; the modules that need TensorFlow import it themselves.
"""
