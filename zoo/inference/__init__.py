"""Inference: a member's model and predictions, TTA, out-of-distribution scores."""
