"""The OpenAPI 3.1 document of the gateway (``GET /openapi.json``), errors included.

Built from the same tables the code uses (error codes and statuses from :mod:`gateway.errors`,
limits from the settings), so the document cannot drift from the behaviour.
"""

from __future__ import annotations

from contract import ABSTAIN_REASONS
from gateway.errors import STATUS_BY_CODE
from gateway.json_input import B64_PATTERN
from gateway.settings import Settings

_MAX_INT = 10**18 - 1  # the largest top_k and version the gateway reads (int64-safe)
_ONCE = (
    " Query string only, at most once: given twice, or as a JSON body key or a form field, it "
    "is refused with 400 invalid_parameter."
)
_EXCLUSIVE = (
    " Not together with {other}: a request with both is refused with 400 invalid_parameter "
    "(TF Serving's ModelSpec takes one of them)."
)


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict:
    out = {}
    for status in statuses:
        codes = sorted(c for c, s in STATUS_BY_CODE.items() if s == status)
        response = _json(_ref("Error"), "error codes: " + ", ".join(codes))
        if status in (503, 429):
            response["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}
            }
        out[str(status)] = response
    return out


def _schemas() -> dict:
    top = {
        "type": "object",
        "required": ["label", "class_id", "probability"],
        "properties": {
            "label": {"type": "string"},
            "class_id": {"type": "integer", "minimum": 0},
            "probability": {"type": "number", "minimum": 0, "maximum": 1},
        },
    }
    only_with_rule = " Present only when the answering version has an abstain rule."
    decision = {
        "abstain": {
            "type": "boolean",
            "description": "true: the version is not sure enough to file this image "
            "(the model's `abstain` output)." + only_with_rule,
        },
        "abstain_reason": {
            "type": ["string", "null"],
            "enum": [*ABSTAIN_REASONS, None],
            "description": "why it abstains, null when it does not; not_a_known_category is "
            "checked first." + only_with_rule,
        },
        "known_probability": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "calibrated probability that the image is one of the version's "
            "labels (1.0 for a version without an off-category class)." + only_with_rule,
        },
    }
    prediction = {
        "type": "object",
        "required": ["label", "class_id", "confidence", "top_k"],
        "properties": {
            "label": {"type": "string"},
            "class_id": {"type": "integer", "minimum": 0},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "top_k": {"type": "array", "items": _ref("TopK")},
            **decision,
        },
    }
    error_body = {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "enum": sorted(STATUS_BY_CODE)},
            "message": {"type": "string"},
        },
    }
    model = {
        "type": "object",
        "required": ["name", "version"],
        "properties": {
            "name": {"type": "string"},
            "version": {
                "type": ["integer", "null"],
                "description": "the version that answered; null if no image reached it",
            },
        },
    }
    item = {
        "type": "object",
        "required": ["index", "filename"],
        "properties": {
            "index": {"type": "integer"},
            "filename": {"type": ["string", "null"]},
            "label": {"type": "string"},
            "class_id": {"type": "integer"},
            "confidence": {"type": "number"},
            "top_k": {"type": "array", "items": _ref("TopK")},
            **decision,
            "error": _ref("ErrorBody"),
        },
        "description": "either the prediction fields or error",
    }
    return {
        "TopK": top,
        "Prediction": prediction,
        "ErrorBody": error_body,
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": _ref("ErrorBody")},
        },
        "Model": model,
        "PredictResponse": {
            "type": "object",
            "required": ["model", "prediction"],
            "properties": {"model": _ref("Model"), "prediction": _ref("Prediction")},
        },
        "BatchResponse": {
            "type": "object",
            "required": ["model", "predictions"],
            "properties": {
                "model": _ref("Model"),
                "predictions": {"type": "array", "items": _ref("BatchItem")},
            },
        },
        "BatchItem": item,
        "Classes": {
            "type": "object",
            "required": ["model", "classes"],
            "properties": {
                "model": _ref("Model"),
                "classes": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "labels in class-id order",
                },
            },
        },
        "B64": {
            "type": "object",
            "required": ["b64"],
            "properties": {
                "b64": {
                    "type": "string",
                    "pattern": B64_PATTERN,
                    "description": "the encoded image file in base64, standard (+/) or URL-safe "
                    "(-_) alphabet, '=' padding optional, line breaks skipped (MIME); otherwise "
                    "invalid_base64: a 400 for /predict, that item's error in a /predict_batch "
                    "answer",
                }
            },
        },
        "JsonImage": {
            "type": "object",
            "required": ["image"],
            "properties": {"image": _ref("B64")},
        },
        "Health": {
            "type": "object",
            "properties": {
                "status": {"const": "ok"},
                "model": {"type": "string"},
                "available_versions": {"type": "array", "items": {"type": "integer"}},
            },
        },
    }


def document(settings: Settings, version: str) -> dict:
    """The OpenAPI document.

    Args:
        settings: limits and defaults quoted in the descriptions.
        version: the gateway version, ``info.version``.

    Returns:
        A JSON-serialisable OpenAPI 3.1 document.
    """
    query = [
        {
            "name": "top_k",
            "in": "query",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": _MAX_INT,
                "default": settings.top_k,
            },
            "description": "top-k list length, capped at the number of classes." + _ONCE,
        },
        {
            "name": "version",
            "in": "query",
            "schema": {"type": "integer", "minimum": 0, "maximum": _MAX_INT},
            "description": "pin a model version (TF Serving ModelSpec.version); 404 not_found "
            "when the server does not have it." + _EXCLUSIVE.format(other="version_label") + _ONCE,
        },
        {
            "name": "version_label",
            "in": "query",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.\\-]{1,64}$"},
            "description": "a version label of TF Serving's model config; 404 not_found when "
            "the server has no such label. Answers by label are never cached."
            + _EXCLUSIVE.format(other="version")
            + _ONCE,
        },
    ]
    auth = [{"apiKey": []}] if settings.api_key else []
    image_body = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": _ref("JsonImage")},
        },
    }
    batch_body = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": settings.max_batch_images,
                            "items": {"type": "string", "format": "binary"},
                        }
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {
                        "instances": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": settings.max_batch_images,
                            "items": _ref("B64"),
                        }
                    },
                }
            },
        },
    }
    serving_errors = (502, 503, 504)
    paths = {
        "/": {
            "get": {
                "summary": "Service info: version, model, live versions, input spec",
                "security": auth,
                "responses": {"200": {"description": "info"}, **_errors(401)},
            }
        },
        "/health": {
            "get": {
                "summary": "Readiness: 200 only when a model version is AVAILABLE",
                "security": [],
                "responses": {"200": _json(_ref("Health"), "ready"), **_errors(503)},
            }
        },
        "/livez": {
            "get": {
                "summary": "Liveness: 200 while the gateway process works, whatever serving does",
                "security": [],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"const": "alive"}},
                        },
                        "alive",
                    )
                },
            }
        },
        "/classes": {
            "get": {
                "summary": "Labels of the live version in class-id order",
                "security": auth,
                "parameters": query[1:],
                "responses": {
                    "200": _json(_ref("Classes"), "labels"),
                    **_errors(400, 401, 404, *serving_errors),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "security": auth,
                "responses": {"200": {"description": "OpenAPI 3.1"}, **_errors(401)},
            }
        },
        "/predict": {
            "post": {
                "summary": "Classify one image (multipart field 'image' or a raw image body)",
                "security": auth,
                "parameters": query,
                "requestBody": image_body,
                "responses": {
                    "200": _json(_ref("PredictResponse"), "prediction"),
                    **_errors(400, 401, 404, 413, 415, *serving_errors),
                },
            }
        },
        "/predict_batch": {
            "post": {
                "summary": "Classify several images (repeated multipart field 'images'); items "
                "that cannot be decoded get their own error, the others are predicted",
                "security": auth,
                "parameters": query,
                "requestBody": batch_body,
                "responses": {
                    "200": _json(_ref("BatchResponse"), "predictions in input order"),
                    **_errors(400, 401, 404, 413, 415, *serving_errors),
                },
            }
        },
    }
    paths["/ui"] = {
        "get": {
            "summary": "The try-it page for people (also GET / with Accept: text/html)",
            "security": [],
            "responses": {
                "200": {
                    "description": "HTML page",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        }
    }
    cache = {
        "X-Cache": {
            "schema": {"type": "string", "enum": ["hit", "miss"]},
            "description": "hit: every image was answered from the prediction cache",
        },
        "X-Model-Version": {
            "schema": {"type": "integer"},
            "description": "the model version that answered",
        },
    }
    for path in ("/predict", "/predict_batch"):
        paths[path]["post"]["responses"]["200"]["headers"] = cache
    unlimited = {"/health", "/livez", "/metrics"}
    for path, item in paths.items():
        for operation in item.values():
            operation["responses"].update(_errors(405, 500))
            if settings.rate_limit and path not in unlimited:
                operation["responses"].update(_errors(429))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Fashion classifier gateway",
            "version": version,
            "description": f"Limits: body {settings.max_body_bytes} bytes, image "
            f"{settings.max_image_pixels} pixels, "
            f"{settings.max_batch_images} images per batch. Rate limit: "
            f"{settings.rate_limit or 'none'} per caller (429 rate_limited with Retry-After; "
            "/health, /livez and /metrics are never limited). Every response carries "
            "X-Request-Id (the caller's when it is 1-64 characters of [A-Za-z0-9._:-], else a "
            "new one). The image's content is checked only by decoding it: a well-formed request "
            "whose bytes are no readable image is 400 not_an_image / corrupt_image / empty_file, "
            "413 image_too_large or 415 unsupported_format.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
    }
