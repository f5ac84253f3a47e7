"""Data: readers for published layouts, the demo set, grouped splits, image cache, tf.data."""

from zoo.data.dataset import Dataset
from zoo.data.loading import load_dataset, load_training_data

__all__ = ["Dataset", "load_dataset", "load_training_data"]
