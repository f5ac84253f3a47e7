"""Every file zoo writes, owned in one place, without Keras or TensorFlow.

- :mod:`zoo.store.layout`: where things live in a workspace (``members/<name>``, …);
- :mod:`zoo.store.records`: versioned schemas of ``member.json``, ``ensemble.json``,
  ``metrics.json``, the prediction-cache sidecars, ``state.json``, lock files and output
  markers, each checked whole (:mod:`zoo.store.checks`) when read by one guarded loader
  (:mod:`zoo.store.files`) that turns a damaged, unreadable or too-new file into one line;
- :mod:`zoo.store.outputs`: where zoo may write — its workspace, or an ``--out`` folder it
  marked (``.zoo-output.json``) or a file it recorded — never over what it did not write;
- :mod:`zoo.store.predictions`: the ISIC prediction CSVs;
- :mod:`zoo.store.cache`: a member's prediction cache (CSV + sidecar);
- :mod:`zoo.store.names`: TTA names and cache keys; :mod:`zoo.store.hashes`: content hashes.

``docs/formats.md`` describes every file.
"""

from zoo.store.cache import PredictionCache
from zoo.store.hashes import (
    HASHED_FILES,
    file_sha256,
    ids_sha256,
    labels_fingerprint,
    member_hashes,
    sha256_of,
)
from zoo.store.layout import (
    ENSEMBLE_FILE,
    MEMBER_FILE,
    METRICS_FILE,
    MODEL_FILE,
    TRAIN_HASHES_FILE,
    Layout,
    predictions_file,
    sidecar_file,
)
from zoo.store.names import TTA_ALLOWED, prediction_key, tta_name, tta_scheme
from zoo.store.predictions import (
    positions,
    predictions_frame,
    read_predictions,
    rows_for,
    write_predictions,
)
from zoo.store.records import (
    CacheRecord,
    EnsembleRecord,
    EvaluationRecord,
    MemberRecord,
    Record,
    try_load,
)

__all__ = [
    "ENSEMBLE_FILE",
    "HASHED_FILES",
    "MEMBER_FILE",
    "TRAIN_HASHES_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "TTA_ALLOWED",
    "CacheRecord",
    "EnsembleRecord",
    "EvaluationRecord",
    "Layout",
    "MemberRecord",
    "PredictionCache",
    "Record",
    "file_sha256",
    "ids_sha256",
    "labels_fingerprint",
    "member_hashes",
    "positions",
    "prediction_key",
    "predictions_file",
    "predictions_frame",
    "read_predictions",
    "rows_for",
    "sha256_of",
    "sidecar_file",
    "try_load",
    "tta_name",
    "tta_scheme",
    "write_predictions",
]
