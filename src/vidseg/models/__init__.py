"""Segmentation models: backbones, decode heads, the :class:`Segmenter` around them, and the
streaming interface of video models (:class:`VideoModel`).

``import vidseg.models`` stays cheap: ``transformers`` is imported only when a transformer
backbone is built.
"""

from vidseg.models.backbones import BACKBONES, Backbone, build_backbone
from vidseg.models.heads import HEADS, build_head
from vidseg.models.segmenter import ModelConfig, Segmenter, build_segmenter, count_parameters
from vidseg.models.ssp import SSP, SSPConfig
from vidseg.models.streaming import ImageStreamer, VideoModel, as_video_model

__all__ = [
    "BACKBONES",
    "HEADS",
    "SSP",
    "Backbone",
    "ImageStreamer",
    "ModelConfig",
    "SSPConfig",
    "Segmenter",
    "VideoModel",
    "as_video_model",
    "build_backbone",
    "build_head",
    "build_segmenter",
    "count_parameters",
]
