"""Progressive resizing: a stage with ``image_size`` trains a copy of the network built at that
size, its weights copied from the member's network and back.

The member's network keeps its input size (what ``model.keras``, TTA and export read); the
convolutions and the pooled head do not depend on the size, so the same weights serve both.
"""

from __future__ import annotations

import keras

from zoo.errors import ZooError
from zoo.models.build import build_model, metadata_width
from zoo.recipes.recipe import Recipe


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """``target`` gets ``source``'s weights, variable by variable."""
    target.set_weights(source.get_weights())


def resized_network(
    model: keras.Model, recipe: Recipe, *, size: int, num_classes: int
) -> keras.Model:
    """``model``'s network built for ``size`` px inputs, with ``model``'s weights."""
    network, _ = build_model(
        recipe,
        num_classes=num_classes,
        image_size=size,
        weights="none",
        metadata_width=metadata_width(model),
    )
    try:
        copy_weights(model, network)
    except ValueError as exc:
        reason = str(exc).splitlines()[0]
        raise ZooError(
            f"stage image_size {size}: backbone {recipe.model.backbone}'s weights depend on the "
            f"input size ({reason}); remove image_size from the recipe's stages."
        ) from None
    return network
