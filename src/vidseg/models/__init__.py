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

# Video methods by ``video.method`` name: the class, built as ``cls(segmenter, section)`` from
# the config section of the same name (``video.ssp``). A new method adds its file and a line here.
VIDEO_MODELS: dict[str, type[VideoModel]] = {"ssp": SSP}


def build_model(
    model_cfg: ModelConfig, video_cfg: object, num_classes: int
) -> Segmenter | VideoModel:
    """The image segmenter of ``model_cfg`` inside the video method of ``video_cfg`` (the
    ``video`` section of a training config; ``method: none`` gives the segmenter alone)."""
    segmenter = build_segmenter(model_cfg, num_classes)
    method = getattr(video_cfg, "method", "none")
    if method == "none":
        return segmenter
    return VIDEO_MODELS[method](segmenter, getattr(video_cfg, method))


__all__ = [
    "BACKBONES",
    "HEADS",
    "SSP",
    "VIDEO_MODELS",
    "Backbone",
    "ImageStreamer",
    "ModelConfig",
    "SSPConfig",
    "Segmenter",
    "VideoModel",
    "as_video_model",
    "build_backbone",
    "build_head",
    "build_model",
    "build_segmenter",
    "count_parameters",
]
