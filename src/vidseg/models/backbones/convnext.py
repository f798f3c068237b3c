"""ConvNeXt-T/S (``transformers``' ``ConvNextBackbone``) as a backbone.

Weights load from a Hugging Face folder or hub id of ``facebook/convnext-*`` (an image classifier:
``convnext.`` + encoder keys; its final ``layernorm`` and ``classifier`` are left out), of
``openmmlab/upernet-convnext-*`` (``backbone.`` keys; ``decode_head``/``auxiliary_head`` left
out), from a saved ``ConvNextBackbone``, or from a state dict in this module's own names.

An ImageNet classifier (``convnext.`` keys, or a saved ``ConvNextModel``) has no per-stage output
norms (``hidden_states_norms``, added for dense prediction as in mmseg's ConvNeXt); loading one,
they keep their initial values (weight 1, bias 0). Every other kind of checkpoint must hold them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from torch import Tensor

from vidseg.errors import ConfigError
from vidseg.models.backbones.base import Backbone, Checkpoint, ConvertedState, split_prefix

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvNextSpec:
    """One ConvNeXt variant: stage widths and depths."""

    widths: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]


CONVNEXT_SPECS = {
    "tiny": ConvNextSpec((96, 192, 384, 768), (3, 3, 9, 3)),
    "small": ConvNextSpec((96, 192, 384, 768), (3, 3, 27, 3)),
}
STAGES = ("stage1", "stage2", "stage3", "stage4")
_LAYER = re.compile(r"model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.dwconv\.weight")
_NORMS = "model.hidden_states_norms."


class ConvNextBackbone(Backbone):
    """ConvNeXt; outputs the 4 stage outputs (NCHW), each through its own LayerNorm."""

    def __init__(self, variant: str, drop_path: float = 0.0):
        super().__init__()
        from transformers import ConvNextBackbone as HFConvNextBackbone
        from transformers import ConvNextConfig

        spec = CONVNEXT_SPECS[variant]
        self.name = f"convnext_{variant}"
        self.spec = spec
        self.channels = spec.widths
        config = ConvNextConfig(
            hidden_sizes=list(spec.widths),
            depths=list(spec.depths),
            drop_path_rate=drop_path,
            out_features=list(STAGES),
        )
        self.model = HFConvNextBackbone(config)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        return list(self.model(pixel_values=x).feature_maps)

    def convert_state_dict(self, checkpoint: Checkpoint) -> ConvertedState:
        tensors = checkpoint.tensors
        if any(k.startswith("convnext.") for k in tensors):
            # ConvNextForImageClassification: the final "layernorm" feeds its classifier only.
            prefix, ignore = "convnext.", ("classifier.", "convnext.layernorm.")
        elif any(k.startswith("backbone.") for k in tensors):
            prefix, ignore = "backbone.", ("decode_head.", "auxiliary_head.")
        elif all(k.startswith("model.") for k in tensors):
            prefix, ignore = "model.", ()
        else:  # a saved ConvNextBackbone or ConvNextModel
            prefix, ignore = "", ("layernorm.",)
        bare = split_prefix(tensors, prefix, ignore)
        converted = {"model." + k: v for k, v in bare.items()}
        origin = {"model." + k: (prefix + k if prefix + k in tensors else k) for k in bare}
        self._check_architecture(converted, checkpoint.source)
        optional: frozenset[str] = frozenset()
        if prefix in ("convnext.", "") and not any(k.startswith(_NORMS) for k in converted):
            optional = frozenset(k for k in self.state_dict() if k.startswith(_NORMS))
            log.info(
                "%s has no per-stage output norms (an image classifier); they start at "
                "weight 1, bias 0",
                checkpoint.source,
            )

        def source_name(own: str) -> str:
            return prefix + own.removeprefix("model.")

        return ConvertedState(converted, origin, source_name, optional)

    def _check_architecture(self, tensors: dict[str, Tensor], source: str) -> None:
        widths: dict[int, int] = {}
        depths: dict[int, int] = {}
        for key, value in tensors.items():
            if m := _LAYER.match(key):
                stage, layer = int(m.group(1)), int(m.group(2))
                widths[stage] = int(value.shape[0])
                depths[stage] = max(depths.get(stage, 0), layer + 1)
        if sorted(widths) != [0, 1, 2, 3]:
            return  # not a 4-stage ConvNeXt: the strict key check reports what is wrong
        found = ConvNextSpec(tuple(widths[i] for i in range(4)), tuple(depths[i] for i in range(4)))
        if found != self.spec:
            names = [f"convnext_{n}" for n, s in CONVNEXT_SPECS.items() if s == found]
            what = f" ({names[0]})" if names else ""
            raise ConfigError(
                f"{source} holds a ConvNeXt with widths {','.join(map(str, found.widths))} and "
                f"depths {','.join(map(str, found.depths))}{what}, but the model is {self.name} "
                f"(depths {','.join(map(str, self.spec.depths))})"
            )
