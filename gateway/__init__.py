"""The thin REST gateway: photos in, labels out, TF Serving over gRPC behind it.

Public surface: :func:`gateway.app.create_app` (the Flask app factory),
:class:`gateway.settings.Settings` (configuration from the environment) and
:class:`gateway.launcher.GatewayProcess` (run it as a subprocess). Importing this package loads
nothing heavy; the gateway never imports the TensorFlow runtime (see :mod:`serving_api.protos`).
"""

__version__ = "0.1.0"
