"""Esteva et al. 2017's taxonomy partition: training classes from a disease tree.

Starting at the root, a node becomes a training class when its images (those labelled with it
or any descendant) number at most ``max_class_size``; otherwise its children are visited. A
leaf always becomes a class, and nodes without images are dropped. Training classes never
span two inference classes: the ancestors of inference classes are always descended. The
network trains on the training classes; a fixed summation layer adds each inference class's
descendants' probabilities, so the saved member answers in inference classes (as the task
summation of :mod:`zoo.scoring.taxonomy` does).

The tree is the ``[tree]`` table of a taxonomy TOML (``zoo/scoring/taxonomy.toml`` by default):
``root``, ``inference`` (the reported classes) and ``children`` (``node = [child, …]``).
"""

from __future__ import annotations

import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import ZooError
from zoo.scoring.taxonomy import TAXONOMY_FILE


@dataclass(frozen=True)
class Tree:
    """A disease taxonomy: ``children`` of each inner node, the ``root``, the ``inference``
    classes."""

    root: str
    children: dict[str, tuple[str, ...]]
    inference: tuple[str, ...]

    def below(self, node: str) -> list[str]:
        """``node`` and all its descendants."""
        found, stack = [], [node]
        while stack:
            n = stack.pop()
            found.append(n)
            stack.extend(reversed(self.children.get(n, ())))
        return found

    def ancestors(self, node: str) -> list[str]:
        parent = {c: p for p, kids in self.children.items() for c in kids}
        path = []
        while node in parent:
            node = parent[node]
            path.append(node)
        return path


def load_tree(path: str | Path = TAXONOMY_FILE) -> Tree:
    """The ``[tree]`` of a taxonomy TOML; a malformed one is a :class:`ZooError` naming it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f).get("tree")
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ZooError(f"taxonomy {path}: cannot read it ({exc}).") from None
    if not isinstance(data, dict) or not {"root", "children", "inference"} <= set(data):
        raise ZooError(f"taxonomy {path}: needs a [tree] table with root, inference and children.")
    children = {str(k): tuple(map(str, v)) for k, v in data["children"].items()}
    tree = Tree(root=str(data["root"]), children=children, inference=tuple(data["inference"]))
    nodes = set(tree.below(tree.root))
    missing = [c for c in tree.inference if c not in nodes]
    if missing:
        raise ZooError(f"taxonomy {path}: inference class(es) {missing} are not in the tree.")
    return tree


def partition(tree: Tree, counts: dict[str, int], max_class_size: int) -> dict[str, list[str]]:
    """Training classes ``{node: [labels under it]}`` by Esteva's rule (see the module)."""
    if max_class_size < 1:
        raise ZooError(f"max_class_size must be at least 1; got {max_class_size}.")
    above_inference = {a for c in tree.inference for a in tree.ancestors(c)}
    classes: dict[str, list[str]] = {}

    def images(node: str) -> int:
        return sum(counts.get(n, 0) for n in tree.below(node))

    def visit(node: str) -> None:
        if images(node) == 0:
            return
        leaf = node not in tree.children
        if leaf or (node not in above_inference and images(node) <= max_class_size):
            classes[node] = [n for n in tree.below(node) if counts.get(n, 0)]
            return
        if counts.get(node, 0):
            raise ZooError(
                f"{counts[node]} image(s) are labelled {node!r}, a node the partition divides "
                f"into {', '.join(tree.children[node])}; label them with one of those or raise "
                "max_class_size."
            )
        for child in tree.children[node]:
            visit(child)

    visit(tree.root)
    return classes


@dataclass(frozen=True)
class Plan:
    """A partition applied to a data set: training classes and how they sum to inference."""

    max_class_size: int
    taxonomy: str
    training: dict[str, list[str]]  # training class → labels under it
    inference: tuple[str, ...]
    tree: Tree

    @property
    def training_classes(self) -> list[str]:
        return list(self.training)

    def training_class_of(self) -> dict[str, str]:
        return {label: node for node, labels in self.training.items() for label in labels}

    def inference_of(self, node: str) -> str:
        for c in self.inference:
            if node in self.tree.below(c):
                return c
        raise ZooError(f"taxonomy {self.taxonomy}: {node!r} is under no inference class.")

    def summation(self) -> np.ndarray:
        """(training classes × inference classes) 0/1 matrix: probabilities @ it sums."""
        matrix = np.zeros((len(self.training), len(self.inference)), dtype="float32")
        for i, node in enumerate(self.training):
            matrix[i, self.inference.index(self.inference_of(node))] = 1.0
        return matrix

    def label_map(self) -> dict[str, str]:
        """Every label under a training class → its inference class."""
        return {
            label: self.inference_of(label) for labels in self.training.values() for label in labels
        }

    def record(self, counts: dict[str, int]) -> dict:
        """What member.json records of the partition."""
        return {
            "max_class_size": self.max_class_size,
            "taxonomy": self.taxonomy,
            "training_classes": [
                {
                    "name": node,
                    "labels": labels,
                    "images": sum(counts.get(label, 0) for label in labels),
                    "inference_class": self.inference_of(node),
                }
                for node, labels in self.training.items()
            ],
            "label_map": self.label_map(),
        }


def parse_partition(text: str) -> dict:
    """``max_class_size=N[,taxonomy=FILE]`` → options; bad text is a :class:`ZooError`."""
    options: dict = {"taxonomy": str(TAXONOMY_FILE)}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("max_class_size", "taxonomy"):
            raise ZooError(
                f"--partition {text!r}: expected max_class_size=N[,taxonomy=FILE]; got {part!r}."
            )
        options[key] = value.strip()
    try:
        options["max_class_size"] = int(options["max_class_size"])
    except (KeyError, ValueError):
        raise ZooError(f"--partition {text!r}: max_class_size=N needs a whole number N.") from None
    return options


def plan_partition(labels, text: str) -> Plan:
    """The partition of images with fine ``labels`` that ``--partition text`` asks for."""
    options = parse_partition(text)
    tree = load_tree(options["taxonomy"])
    counts = dict(Counter(map(str, labels)))
    nodes = set(tree.below(tree.root))
    outside = sorted(label for label in counts if label not in nodes)
    if outside:
        raise ZooError(
            f"--partition: label(s) {', '.join(outside)} are not in the taxonomy "
            f"{options['taxonomy']}; add them to its [tree] or map them first."
        )
    training = partition(tree, counts, options["max_class_size"])
    return Plan(
        max_class_size=options["max_class_size"],
        taxonomy=options["taxonomy"],
        training=training,
        inference=tree.inference,
        tree=tree,
    )


def relabel(dataset, plan: Plan):
    """``dataset`` with each label replaced by its training class (labels outside the
    partition are kept, so the reader's problems still name them)."""
    import dataclasses

    lookup = plan.training_class_of()
    labels = dataset.records["label"].map(lambda v: lookup.get(v, v))
    return dataclasses.replace(
        dataset,
        records=dataset.records.assign(label=labels),
        classes=tuple(plan.training_classes),
    )


def summed_model(model, matrix: np.ndarray):
    """``model`` followed by a fixed layer that sums its class probabilities by ``matrix``
    (training × inference classes): the saved member answers in inference classes."""
    import keras

    layer = keras.layers.Dense(
        matrix.shape[1], use_bias=False, trainable=False, name="taxonomy_sum"
    )
    outputs = layer(model.output)
    layer.set_weights([matrix])
    return keras.Model(model.input, outputs, name=model.name)


def summed_priors(counts: np.ndarray, class_weights: np.ndarray, effective, matrix: np.ndarray):
    """Training-class counts, class weights and effective priors summed to inference classes
    (class weights as the count-weighted mean, so effective ∝ count × weight still holds)."""
    counts = np.asarray(counts, float)
    summed = counts @ matrix
    weights = np.divide(
        (counts * class_weights) @ matrix, summed, out=np.zeros_like(summed), where=summed > 0
    )
    return summed, weights, np.asarray(effective, float) @ matrix
