"""Prediction CSVs in ISIC format: column ``image`` (the image id), then one column per class.

The one reader and writer of every prediction file zoo keeps (members' and ensembles'
``predictions/``, the caches): probabilities are written with 8 significant digits (``%.8g``),
one ``%`` per row — seven times faster than pandas' per-value formatting, with the same
bytes; ids or class names that need CSV quoting go through pandas.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from zoo.errors import ZooError
from zoo.store.files import first_line

_CSV_SPECIAL = re.compile(r'[,"\r\n]')


def predictions_frame(ids: Sequence, probabilities, classes: Sequence) -> pd.DataFrame:
    """Class probabilities in ISIC format: index ``image``, one column per class."""
    return pd.DataFrame(
        np.asarray(probabilities, dtype=float),
        index=pd.Index(list(ids), name="image"),
        columns=list(classes),
    )


def write_predictions(path: str | Path, frame: pd.DataFrame) -> Path:
    """Write ``frame`` (index: image ids, columns: classes) atomically as ISIC CSV."""
    from zoo.store.workspace import atomic_write_csv, atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [str(c) for c in frame.columns]
    ids = [str(i) for i in frame.index]
    if _CSV_SPECIAL.search("".join(names)) or _CSV_SPECIAL.search("".join(ids)):
        return atomic_write_csv(path, frame.rename_axis("image"), float_format="%.8g")
    row = "%s" + ",%.8g" * len(names)
    values = frame.to_numpy(dtype=np.float64).tolist()
    lines = ["image," + ",".join(names)]
    lines += [row % (image, *probs) for image, probs in zip(ids, values, strict=True)]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_predictions(path: str | Path) -> pd.DataFrame:
    """A prediction CSV as floats indexed by image id (str); a bad file is a ZooError."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={"image": str}, na_filter=False).set_index("image")
        frame = frame.astype(np.float64)
    except (OSError, KeyError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ZooError(
            f"{path} is not a predictions file (image + one number per class): "
            f"{first_line(exc)}; delete it so that it is recomputed"
        ) from None
    bad = ~np.isfinite(frame.to_numpy())
    if bad.any():
        row, column = (int(i[0]) for i in np.nonzero(bad))
        raise ZooError(
            f"{path} is not a predictions file: image {frame.index[row]!r}, class "
            f"{frame.columns[column]!r} is {frame.iat[row, column]} (not a finite number); "
            "delete it so that it is recomputed"
        )
    return frame


def positions(index: Sequence[str], ids: Sequence[str]) -> np.ndarray:
    """Row numbers in ``index`` of each of ``ids`` (every id must be in ``index``)."""
    where = {image: k for k, image in enumerate(index)}
    return np.fromiter((where[i] for i in ids), dtype=np.intp, count=len(ids))


def rows_for(
    frame: pd.DataFrame, ids: Sequence[str], classes: Sequence[str], *, what: str
) -> np.ndarray:
    """The frame's values in ``ids`` row order; other columns or missing ids are a ZooError
    naming ``what``."""
    columns = [str(c) for c in frame.columns]
    if columns != list(classes):
        raise ZooError(
            f"{what} has columns {columns} but the classes are {list(classes)}; "
            "delete the file so that it is recomputed"
        )
    ids = list(ids)
    index = frame.index.astype(str)
    if index.tolist() == ids:
        return frame.to_numpy(dtype=np.float64)
    missing = pd.Index(ids).difference(index)
    if len(missing):
        raise ZooError(
            f"{what} lacks {len(missing)} of the {len(ids)} requested images "
            f"(e.g. {', '.join(map(str, missing[:3]))}); delete the file so that it is recomputed"
        )
    values = frame.to_numpy(dtype=np.float64)
    return values[positions(index.tolist(), ids)]
