"""Training of image segmentation models on Lightning Fabric (see docs/training.md).

- :mod:`vidseg.training.config`: the typed configuration of ``vidseg train``;
- :func:`vidseg.training.trainer.train`: the loop (DDP, mixed precision, exact resume);
- :mod:`vidseg.training.checkpoint`: run directories and checkpoint files.
"""
