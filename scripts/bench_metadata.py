"""What age, sex and anatomical site add to a fine-tuned member, measured on validation.

    python scripts/bench_metadata.py MEMBER [MEMBER…] --workspace WS --data ham10000:DIR
        [--folds 5] [--C 0.05] [--resamples 1000]

For each member: its frozen image features (the pooled backbone output of ``model.keras``) of
the validation and test images, and their metadata encoded as a member with ``metadata =
["age", "sex", "site"]`` reads it (:class:`zoo.data.metadata.MetadataEncoding`, fitted on the
training split). A multinomial logistic-regression head (scikit-learn, balanced class
weights, features standardised) is fitted twice on the same inputs, with and without the
metadata, on images the backbone never trained on; once on the image features, once on the
member's own log-probabilities (a stacked head, which keeps what the fine-tuned head knows):

- **validation**: lesion-grouped, stratified ``--folds``-fold cross-validation within the
  validation split (each image predicted by a head that did not see its lesion);
- **test**: a head fitted on the whole validation split, scored on the test split.

It prints, per member and inputs, balanced accuracy and melanoma AUC, and the metadata's
gain with a lesion-bootstrap 95 % interval.

With ``--end-to-end DIR`` it also compares the first MEMBER with the member in DIR — the same
recipe, seed and split trained with ``metadata = ["age", "sex", "site"]`` (``--set``) — on
their saved validation and test predictions, raw and prior-corrected: what the recipe option
itself does. The fine-tuned member's own head (trained on the
training split with the backbone) is printed for reference. The head is refitted because the
backbone's features of its own training images are nearly separable, so a head trained there
learns to ignore anything else.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FIELDS = ["age", "sex", "site"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("members", nargs="+")
    parser.add_argument("--workspace", required=True, type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--C", type=float, default=0.05, help="inverse L2 strength of the head")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--end-to-end", type=Path, metavar="DIR", help="a member with metadata")
    args = parser.parse_args()

    from zoo.data.loading import load_dataset

    dataset = load_dataset(args.data, workspace=args.workspace)
    print(f"data {args.data}: {len(dataset)} images; head C={args.C}, {args.folds} folds")
    print(
        f"{'member':42} {'inputs':22} {'val BA':>7} {'val melAUC':>10} {'test BA':>8} {'test melAUC':>11}"
    )
    for name in args.members:
        measure(name, dataset, args)
    if args.end_to_end is not None:
        end_to_end(args.members[0], args.end_to_end, dataset, args)


def end_to_end(name: str, folder: Path, dataset, args) -> None:
    """The member ``name`` against the same recipe trained with metadata (``folder``)."""
    from zoo.inference.members import Member
    from zoo.inference.target import MemberTarget
    from zoo.store import Layout

    base = MemberTarget(Member(Layout(args.workspace).member(name)))
    other = MemberTarget(Member(folder.resolve()))
    mel = list(base.classes).index("mel")
    print(f"\n{'end to end: ' + other.name:42} {'outputs':22} {'BA':>7} {'melAUC':>10}")
    for part in ("val", "test"):
        ids = base.split_ids(part)
        if other.split_ids(part) != ids:
            raise SystemExit(f"{other.name} has another {part} split than {name}")
        y = dataset.subset(ids).labels
        lesions = dataset.records.loc[ids, "group"].astype(str).to_numpy()
        for corrected in (False, True):
            frames = [
                t.probabilities(dataset, ids, prior_correction=corrected, workspace=args.workspace)
                for t in (base, other)
            ]
            probs = [f.to_numpy() for f in frames]
            label = f"{part}, {'prior-corrected' if corrected else 'raw'}"
            for who, p in zip((name, other.name), probs, strict=True):
                ba, auc = scores(p, y, mel)
                print(f"{who:42} {label:22} {ba:7.3f} {auc:10.3f}")
            gain = bootstrap_gain(probs[0], probs[1], y, lesions, args.resamples)
            print(f"{'':42} {'  gain':22} BA {gain[0]:+.3f} [{gain[1]:+.3f}, {gain[2]:+.3f}]")


def measure(name: str, dataset, args) -> None:
    """Fit and score the two heads of one member; print its rows."""
    from zoo.data.metadata import MetadataEncoding
    from zoo.inference.members import Member
    from zoo.store import Layout

    member = Member(Layout(args.workspace).member(name))
    if member.info["data"]["fingerprint"] != dataset.fingerprint:
        raise SystemExit(f"{name} was not trained on {args.data}")
    parts = {part: member.split_ids(part) for part in ("train", "val", "test")}
    encoding = MetadataEncoding.fit(FIELDS, dataset.metadata(parts["train"]))
    features, own = image_features(member, dataset, parts, args.workspace)
    meta = {p: encoding.encode(dataset.metadata(parts[p])) for p in ("val", "test")}
    labels = {p: dataset.subset(parts[p]).labels for p in ("val", "test")}
    lesions = {p: dataset.records.loc[parts[p], "group"].astype(str).to_numpy() for p in parts}
    mel = list(member.classes).index("mel")
    row(name, "member's own head", own, labels, mel)
    log_own = {p: np.log(np.clip(own[p], 1e-7, 1.0)) for p in ("val", "test")}
    for inputs, base in (("image features", features), ("member's log-probs", log_own)):
        results = {}
        for with_meta in (False, True):
            x = {p: join(base[p], meta[p] if with_meta else None) for p in ("val", "test")}
            val = cross_validated(x["val"], labels["val"], lesions["val"], args)
            test = head(args).fit(x["val"], labels["val"]).predict_proba(x["test"])
            results[with_meta] = {"val": val, "test": test}
            row(
                "",
                inputs if not with_meta else "  + age, sex, site",
                results[with_meta],
                labels,
                mel,
            )
        for part in ("val", "test"):
            gain = bootstrap_gain(
                results[False][part],
                results[True][part],
                labels[part],
                lesions[part],
                args.resamples,
            )
            print(
                f"{'':42} {'  gain on ' + part:22} BA {gain[0]:+.3f} [{gain[1]:+.3f}, {gain[2]:+.3f}]"
            )


def image_features(member, dataset, parts, workspace: Path):
    """Pooled backbone features of the validation and test images; the member's own outputs."""
    from zoo.data.images import load_images
    from zoo.data.pipeline import inference_dataset
    from zoo.inference.target import image_settings
    from zoo.models.build import split_model
    from zoo.store import Layout

    table = load_images(dataset, **image_settings(member), cache_dir=Layout(workspace).image_cache)
    backbone, own_head = split_model(member.load_model())
    features, own = {}, {}
    for part in ("val", "test"):
        batches = inference_dataset(table.take(parts[part]), batch_size=128)
        features[part] = np.asarray(backbone.predict(batches, verbose=0), np.float32)
        own[part] = own_head.predict(features[part], batch_size=256, verbose=0)
    return features, own


def join(features: np.ndarray, metadata: np.ndarray | None) -> np.ndarray:
    return features if metadata is None else np.concatenate([features, metadata], axis=1)


def head(args):
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=args.C, class_weight="balanced", max_iter=2000),
    )


def cross_validated(x, y, groups, args) -> np.ndarray:
    """Each image's probabilities from a head fitted on the folds without its lesion."""
    out = np.zeros((len(y), len(np.unique(y))))
    folds = StratifiedGroupKFold(n_splits=args.folds, shuffle=True, random_state=0)
    for fit, held in folds.split(x, y, groups):
        model = head(args).fit(x[fit], y[fit])
        out[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
    return out


def scores(probs: np.ndarray, y: np.ndarray, mel: int) -> tuple[float, float]:
    return (
        balanced_accuracy_score(y, probs.argmax(axis=1)),
        roc_auc_score(y == mel, probs[:, mel]),
    )


def row(name: str, label: str, probs: dict, labels: dict, mel: int) -> None:
    val, test = scores(probs["val"], labels["val"], mel), scores(probs["test"], labels["test"], mel)
    print(f"{name:42} {label:22} {val[0]:7.3f} {val[1]:10.3f} {test[0]:8.3f} {test[1]:11.3f}")


def bootstrap_gain(base, other, y, lesions, resamples: int) -> tuple[float, float, float]:
    """Balanced-accuracy gain of ``other`` over ``base`` and its lesion-bootstrap 95 % interval
    (zoo's paired bootstrap, as the leaderboard's ensemble gain)."""
    import pandas as pd

    from zoo.scoring.metrics import paired_difference_ci

    ids = pd.Index([f"i{k}" for k in range(len(y))], name="image")
    truth = pd.DataFrame(np.eye(base.shape[1])[y], index=ids)
    low, high = paired_difference_ci(
        truth,
        pd.DataFrame(other, index=ids),
        pd.DataFrame(base, index=ids),
        groups=pd.Series(lesions, index=ids),
        n_resamples=resamples,
    )
    point = balanced_accuracy_score(y, other.argmax(1)) - balanced_accuracy_score(y, base.argmax(1))
    return point, low, high


if __name__ == "__main__":
    main()
