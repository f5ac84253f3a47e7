"""zoo's own from-scratch backbone for small inputs on a CPU."""

from __future__ import annotations

import keras
from keras import layers


def small_cnn(
    *,
    input_shape: tuple[int, int, int],
    widths=(32, 64, 128, 256),
    convs_per_stage: int = 2,
    name: str = "small_cnn",
) -> keras.Model:
    """Stages of 3×3 conv–BN–ReLU blocks, each stage halving resolution, then global pooling."""
    inputs = keras.Input(input_shape)
    x = inputs
    for stage, width in enumerate(widths):
        for conv in range(convs_per_stage):
            x = layers.Conv2D(
                width, 3, padding="same", use_bias=False, name=f"stage{stage}_conv{conv}"
            )(x)
            x = layers.BatchNormalization(momentum=0.9, name=f"stage{stage}_bn{conv}")(x)
            x = layers.ReLU(name=f"stage{stage}_relu{conv}")(x)
        if stage < len(widths) - 1:
            x = layers.MaxPooling2D(name=f"stage{stage}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name=name)
