"""Model builders: backbones from keras.applications or zoo's own, plus a softmax head."""

from zoo.models.build import build_model, split_model

__all__ = ["build_model", "split_model"]
