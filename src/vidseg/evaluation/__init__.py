"""Evaluation of trained models on clip-folder datasets (see docs/metrics.md and docs/cli.md).

- :mod:`vidseg.evaluation.video`: causal streaming evaluation of any video model over a split
  (``evaluate_video``), scoring of prediction PNGs from any tool (``score_predictions``), reports.
- :mod:`vidseg.evaluation.image`: labelled frames of a split through an image segmenter (training
  validation).
- :mod:`vidseg.evaluation.bench`: parameters, FLOPs, latency, memory per frame (``vidseg bench``).
- :mod:`vidseg.evaluation.speed`: the latency of one model on one frame size.

The submodules are imported explicitly: they pull in different parts of the library.
"""
