"""The nightly batch job: classify the images in an incoming folder through the gateway's HTTP
API and file each under its category, crash-safe (a SQLite ledger) and exactly once.

Entry point: ``python -m batch run --help``. Public API: :func:`batch.runner.run` with a
:class:`batch.settings.BatchSettings`. No TensorFlow, gRPC or Flask import anywhere in here.
"""
