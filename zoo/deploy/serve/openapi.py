"""The machine-readable description of ``zoo serve``'s HTTP API (OpenAPI 3.1), served at
``/openapi.json``: what each route takes and answers, with the served target's classes."""

from __future__ import annotations

OPENAPI_PATH = "/openapi.json"


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(
        description,
        {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
    )


def openapi_document(*, title: str, version: str, classes: list[str], field: str, max_bytes: int):
    """The OpenAPI document of the app that serves ``classes``; ``field`` is the upload's
    multipart file field, ``max_bytes`` the largest upload accepted."""
    probability = {"type": "number", "minimum": 0, "maximum": 1}
    answer = {
        "type": "object",
        "required": ["image", "target", "probabilities", "top_class", "flag", "disclaimer"],
        "properties": {
            "image": {"type": "string", "description": "the uploaded file's name"},
            "target": {"type": "object"},
            "probabilities": {
                "type": "object",
                "properties": {c: probability for c in classes},
                "required": list(classes),
                "description": "what zoo serves: calibrated unless the server runs with "
                "--no-calibration",
            },
            "classes": {"type": "array", "items": {"type": "object"}},
            "top_class": {"type": "object"},
            "ood": {"type": ["object", "null"]},
            "flag": {
                "type": ["object", "null"],
                "description": "the melanoma flag at the operating point chosen on validation",
            },
            "settings": {"type": "object"},
            "disclaimer": {"type": "string"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Research software, not a diagnostic device.",
        },
        "paths": {
            "/": {
                "get": {
                    "summary": "The upload page",
                    "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
                }
            },
            "/info": {
                "get": {
                    "summary": "The served target: classes, operating point, limits, model card",
                    "responses": {"200": _json("The target", {"type": "object"})},
                }
            },
            "/health": {
                "get": {
                    "summary": "Liveness",
                    "responses": {"200": _json("ok", {"type": "object"})},
                }
            },
            "/predict": {
                "post": {
                    "summary": "Classify one image",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        field: {
                                            "type": "string",
                                            "format": "binary",
                                            "description": f"an image file, at most "
                                            f"{max_bytes} bytes",
                                        }
                                    },
                                    "required": [field],
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json("The prediction", answer),
                        "400": _error("Not an image, or no file field"),
                        "413": _error("Upload or picture too large"),
                        "415": _error("Not a multipart upload, or an unsupported picture"),
                        "503": _error("Busy decoding other uploads; try again"),
                    },
                }
            },
            OPENAPI_PATH: {
                "get": {
                    "summary": "This description",
                    "responses": {"200": _json("OpenAPI 3.1", {"type": "object"})},
                }
            },
        },
    }
