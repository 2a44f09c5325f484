"""End-to-end benchmark: every layer of the product against what the model alone costs.

``python -m bench`` (``make bench``) measures, in one run on the same machine, the model called
in-process (the floor), the in-process decode+model pipeline (the ideal for a whole job), the model
server over gRPC, the gateway's ``/predict`` and ``/predict_batch``, and the nightly job; it prints
a table and writes ``bench/results/latest.json`` with a top-level ``ratios`` object.
"""
