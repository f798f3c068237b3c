"""Image segmentation models: backbones, decode heads and the :class:`Segmenter` around them.

``import vidseg.models`` stays cheap: ``transformers`` is imported only when a transformer
backbone is built.
"""

from vidseg.models.backbones import BACKBONES, Backbone, build_backbone
from vidseg.models.heads import HEADS, build_head
from vidseg.models.segmenter import ModelConfig, Segmenter, build_segmenter, count_parameters

__all__ = [
    "BACKBONES",
    "HEADS",
    "Backbone",
    "ModelConfig",
    "Segmenter",
    "build_backbone",
    "build_head",
    "build_segmenter",
    "count_parameters",
]
