"""Export: publish a trained Keras model as a versioned TF Serving SavedModel.

``python -m export`` writes ``<base>/<version>/`` (SavedModel, labels, model card, warm-up
requests) through a staging folder and an atomic rename; ``python -m export verify <dir>`` checks
a version folder; ``python -m export list <base>`` lists the versions. See docs/CONTRACTS.md §2.
"""
