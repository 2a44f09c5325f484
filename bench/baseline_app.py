"""The design the product replaces: Flask with TensorFlow in one process (the benchmark's rival).

One ``serving_default`` call per request, on the same SavedModel, after the same
``preprocessing.decode``, with the same allocator setting (``serving_api.memory``) and the same
TensorFlow thread settings as the product's model server; run under gunicorn with 1 worker x 8
threads, as the original system ran on Cloud Run::

    BASELINE_MODEL_DIR=models/fashion/1 gunicorn -k gthread -w 1 --threads 8 \\
        'bench.baseline_app:create_app()'

Environment: ``BASELINE_MODEL_DIR`` (a SavedModel version folder, required),
``BASELINE_INTRA_OP`` / ``BASELINE_INTER_OP`` (TF threads; 0 = TensorFlow's default).

Endpoints: ``POST /predict`` (multipart field ``image``) answers
``{"prediction": {"label": str, "confidence": float}}``; ``POST /predict_batch`` (fields
``images``) decodes all and makes one call for the whole request, answering
``{"predictions": [{"label", "confidence"}, ...]}``; ``GET /health`` answers ``{"status": "ok"}``.
A file that does not decode answers 400.
"""

from __future__ import annotations

import os

import numpy as np
from flask import Flask, jsonify, request

import preprocessing
from contract import OUTPUT_CLASSES, OUTPUT_PROBABILITIES, SIGNATURE_NAME
from serving_api.memory import keep_large_buffers_on_heap


def create_app() -> Flask:
    """Load the model (TF threads set first), warm it up with one call, and build the app.

    Returns:
        The Flask app.

    Raises:
        KeyError: ``BASELINE_MODEL_DIR`` is not set.
    """
    keep_large_buffers_on_heap()
    import tensorflow as tf

    threading = tf.config.threading
    threading.set_intra_op_parallelism_threads(int(os.environ.get("BASELINE_INTRA_OP", 0)))
    threading.set_inter_op_parallelism_threads(int(os.environ.get("BASELINE_INTER_OP", 0)))
    loaded = tf.saved_model.load(os.environ["BASELINE_MODEL_DIR"])
    signature = loaded.signatures[SIGNATURE_NAME]
    _, kwargs = signature.structured_input_signature
    ((input_name, spec),) = kwargs.items()
    size = (int(spec.shape[1]), int(spec.shape[2]))

    def predict(batch: np.ndarray) -> list[dict]:
        outputs = signature(**{input_name: tf.constant(batch)})
        probabilities = outputs[OUTPUT_PROBABILITIES].numpy()
        classes = outputs[OUTPUT_CLASSES].numpy()
        best = probabilities.argmax(axis=1)
        return [
            {"label": classes[i][j].decode(), "confidence": float(probabilities[i][j])}
            for i, j in enumerate(best)
        ]

    predict(np.zeros((1, *size, 3), np.uint8))  # warm-up, as the model server's warm-up file
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 32 * 1024 * 1024

    @app.get("/health")
    def health():
        return jsonify(status="ok")

    @app.post("/predict")
    def predict_one():
        upload = request.files.get("image")
        if upload is None:
            return jsonify(error="multipart field 'image' missing"), 400
        try:
            image = preprocessing.decode(upload.read(), size)
        except preprocessing.ImageError as exc:
            return jsonify(error=str(exc)), 400
        return jsonify(prediction=predict(image[None])[0])

    @app.post("/predict_batch")
    def predict_batch():
        uploads = request.files.getlist("images")
        if not uploads:
            return jsonify(error="multipart field 'images' missing"), 400
        try:
            images = np.stack([preprocessing.decode(f.read(), size) for f in uploads])
        except preprocessing.ImageError as exc:
            return jsonify(error=str(exc)), 400
        return jsonify(predictions=predict(images))

    return app
