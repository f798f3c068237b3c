"""Evaluation of trained models on clip-folder datasets (see docs/metrics.md)."""
