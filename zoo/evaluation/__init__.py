"""Evaluation: score a member or ensemble on a split, reliability, explanations."""
