"""zoo — a Keras 3 model zoo for skin-lesion classification with ensembling.

Research software, not a diagnostic device.
"""

__version__ = "0.1.0"
