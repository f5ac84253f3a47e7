"""Scoring: metrics, the taxonomy, operating points, calibration, prior correction, plots."""
