"""zoo — a Keras 3 model zoo for skin-lesion classification with ensembling.

Research software, not a diagnostic device.

The Python API (:mod:`zoo.api`), loaded on first use so that ``import zoo`` stays cheap:
``zoo.load(name_or_path)`` → a model with ``.predict(images)``; ``zoo.train(recipe, data=…)``;
``zoo.evaluate(target, …)``.
"""

__version__ = "0.1.0"
__all__ = ["evaluate", "load", "train", "__version__"]


def __getattr__(name: str):
    if name in ("load", "train", "evaluate"):
        from zoo import api

        return getattr(api, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
