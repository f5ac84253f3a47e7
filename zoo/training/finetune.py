"""Fine-tuning a pretrained backbone: layer groups, discriminative learning rates, frozen BN.

A stage that trains every layer may give the backbone's layer groups (early to late) their
own learning-rate multipliers, as fastai's discriminative learning rates and Steppan &
Hanke's ISIC 2019 members did: early layers, which hold generic ImageNet features, move
less than late ones; a multiplier of 0 freezes a group (which also saves its backward pass).
The optimizer applies the multipliers per variable (:func:`make_optimizer`); they are saved
with it, so an interrupted run resumes with the same rates.
"""

from __future__ import annotations

import keras
import numpy as np

from zoo.recipes.specs import OPTIMIZERS as OPTIMIZER_CLASSES
from zoo.recipes.specs import OptimizerSpec, StageSpec


def _discriminative(base: type) -> type:
    """``base`` whose update step scales the learning rate of each variable by its multiplier."""

    class Discriminative(base):
        def __init__(self, *args, multipliers: dict[str, float] | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.multipliers = dict(multipliers or {})

        def build(self, variables):
            super().build(variables)
            self._factors = [self.multipliers.get(v.path, 1.0) for v in variables]

        def update_step(self, gradient, variable, learning_rate):
            # the backend may hand over its own variable: find ours by the optimizer's index
            factor = self._factors[self._get_variable_index(variable)]
            if factor != 1.0:
                learning_rate = learning_rate * factor
            return super().update_step(gradient, variable, learning_rate)

        def get_config(self):
            return {**super().get_config(), "multipliers": self.multipliers}

    Discriminative.__name__ = Discriminative.__qualname__ = f"Discriminative{base.__name__}"
    return keras.saving.register_keras_serializable(package="zoo")(Discriminative)


OPTIMIZERS = {name: getattr(keras.optimizers, cls) for name, cls in OPTIMIZER_CLASSES.items()}
DISCRIMINATIVE = {name: _discriminative(cls) for name, cls in OPTIMIZERS.items()}


def make_optimizer(
    spec: OptimizerSpec, learning_rate: float, multipliers: dict[str, float] | None = None
) -> keras.optimizers.Optimizer:
    """The recipe's ``[optimizer]`` at ``learning_rate``; with per-variable ``multipliers``
    (variable path → factor), the discriminative version of the same optimizer."""
    if multipliers:
        return DISCRIMINATIVE[spec.name](
            learning_rate=learning_rate, multipliers=multipliers, **spec.arguments
        )
    return OPTIMIZERS[spec.name](learning_rate=learning_rate, **spec.arguments)


def leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers in order, nested models opened up."""
    leaves = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            leaves += leaf_layers(layer)
        else:
            leaves.append(layer)
    return leaves


def layer_groups(model: keras.Model, count: int) -> list[list[keras.layers.Layer]]:
    """The layers that hold weights, cut into ``count`` contiguous groups of nearly equal
    length, early to late."""
    weighted = [layer for layer in leaf_layers(model) if layer.weights]
    return [list(group) for group in np.array_split(np.array(weighted, dtype=object), count)]


def prepare_backbone(features: keras.Model, stage: StageSpec) -> dict[str, float]:
    """Set which backbone layers train in ``stage`` and return the learning-rate multiplier of
    every trainable variable whose multiplier is not 1 (empty when there are none)."""
    features.trainable = stage.trainable == "all"
    if stage.trainable != "all":
        return {}
    multipliers: dict[str, float] = {}
    if stage.lr_multipliers:
        for group, factor in zip(
            layer_groups(features, len(stage.lr_multipliers)), stage.lr_multipliers, strict=True
        ):
            for layer in group:
                layer.trainable = factor > 0
                if 0 < factor != 1:
                    multipliers.update({v.path: factor for v in layer.trainable_weights})
    if stage.batchnorm == "frozen":
        for layer in leaf_layers(features):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False  # Keras then also runs it in inference mode
        multipliers = {
            path: factor
            for path, factor in multipliers.items()
            if path in {v.path for v in features.trainable_weights}
        }
    return multipliers
