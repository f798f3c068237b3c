"""SegFormer's Mix Transformer encoders MiT-b0..b5 (``transformers``' ``SegformerModel``).

Weights load from a Hugging Face folder or hub id of ``nvidia/mit-bX`` (an image classifier:
``segformer.`` + encoder keys, the ``classifier.`` is left out) or of a
``SegformerForSemanticSegmentation`` model (its ``decode_head.`` is left out), from a saved
``SegformerModel``, or from a state dict in this module's own names
(``model.<SegformerModel key>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import Tensor

from vidseg.errors import ConfigError
from vidseg.models.backbones.base import Backbone, Checkpoint, ConvertedState


@dataclass(frozen=True)
class MiTSpec:
    """One MiT variant: stage widths and depths (heads 1,2,5,8 and SR ratios 8,4,2,1 for all)."""

    widths: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]


MIT_SPECS = {
    "b0": MiTSpec((32, 64, 160, 256), (2, 2, 2, 2)),
    "b1": MiTSpec((64, 128, 320, 512), (2, 2, 2, 2)),
    "b2": MiTSpec((64, 128, 320, 512), (3, 4, 6, 3)),
    "b3": MiTSpec((64, 128, 320, 512), (3, 4, 18, 3)),
    "b4": MiTSpec((64, 128, 320, 512), (3, 8, 27, 3)),
    "b5": MiTSpec((64, 128, 320, 512), (3, 6, 40, 3)),
}

# transformers 5 renamed SegformerModel's modules; checkpoints on disk (and transformers 4) use
# the original names. Keys are matched in the original ("legacy") spelling.
_CURRENT_TO_LEGACY = (
    (re.compile(r"stages\.(\d+)\.patch_embeddings\."), r"encoder.patch_embeddings.\1."),
    (re.compile(r"stages\.(\d+)\.blocks\."), r"encoder.block.\1."),
    (re.compile(r"stages\.(\d+)\.layer_norm\."), r"encoder.layer_norm.\1."),
    (re.compile(r"attention\.q_proj\."), "attention.self.query."),
    (re.compile(r"attention\.k_proj\."), "attention.self.key."),
    (re.compile(r"attention\.v_proj\."), "attention.self.value."),
    (re.compile(r"attention\.sequence_reduction\.sequence_reduction\."), "attention.self.sr."),
    (re.compile(r"attention\.sequence_reduction\.layer_norm\."), "attention.self.layer_norm."),
    (re.compile(r"attention\.o_proj\."), "attention.output.dense."),
    (re.compile(r"mlp\.fc1\."), "mlp.dense1."),
    (re.compile(r"mlp\.fc2\."), "mlp.dense2."),
    (re.compile(r"layernorm_before\."), "layer_norm_1."),
    (re.compile(r"layernorm_after\."), "layer_norm_2."),
)
_PATCH = re.compile(r"encoder\.patch_embeddings\.(\d+)\.proj\.weight")
_BLOCK = re.compile(r"encoder\.block\.(\d+)\.(\d+)\.")


def legacy_key(key: str) -> str:
    """A SegformerModel key in the original spelling (idempotent on original keys)."""
    for pattern, replacement in _CURRENT_TO_LEGACY:
        key = pattern.sub(replacement, key)
    return key


class MiTBackbone(Backbone):
    """MiT encoder; outputs the 4 stage outputs (NCHW) with their final LayerNorm applied."""

    def __init__(self, variant: str, drop_path: float = 0.0):
        super().__init__()
        from transformers import SegformerConfig, SegformerModel

        spec = MIT_SPECS[variant]
        self.name = f"mit_{variant}"
        self.spec = spec
        self.channels = spec.widths
        config = SegformerConfig(
            hidden_sizes=list(spec.widths),
            depths=list(spec.depths),
            num_attention_heads=[1, 2, 5, 8],
            sr_ratios=[8, 4, 2, 1],
            drop_path_rate=drop_path,
        )
        self.model = SegformerModel(config)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        return list(self.model(pixel_values=x, output_hidden_states=True).hidden_states)

    def convert_state_dict(self, checkpoint: Checkpoint) -> ConvertedState:
        tensors = checkpoint.tensors
        if any(k.startswith("segformer.") for k in tensors):
            prefix, ignore = "segformer.", ("classifier.", "decode_head.")
        elif all(k.startswith("model.") for k in tensors):
            prefix, ignore = "model.", ()
        else:  # a saved SegformerModel
            prefix, ignore = "", ()
        own_by_legacy = {legacy_key(k.removeprefix("model.")): k for k in self.state_dict()}
        converted: dict[str, Tensor] = {}
        origin: dict[str, str] = {}
        legacy: dict[str, Tensor] = {}
        for key, value in tensors.items():
            if key.startswith(ignore):
                continue
            bare = legacy_key(key.removeprefix(prefix)) if key.startswith(prefix) else key
            legacy[bare] = value
            own = own_by_legacy.get(bare, key)  # an unknown key keeps its name: it is unexpected
            converted[own] = value
            origin[own] = key
        self._check_architecture(legacy, checkpoint.source)

        def source_name(own: str) -> str:
            return prefix + legacy_key(own.removeprefix("model."))

        return ConvertedState(converted, origin, source_name)

    def _check_architecture(self, legacy: dict[str, Tensor], source: str) -> None:
        widths = {
            int(m.group(1)): int(v.shape[0]) for k, v in legacy.items() if (m := _PATCH.match(k))
        }
        depths: dict[int, int] = {}
        for key in legacy:
            if m := _BLOCK.match(key):
                stage, block = int(m.group(1)), int(m.group(2))
                depths[stage] = max(depths.get(stage, 0), block + 1)
        if sorted(widths) != [0, 1, 2, 3] or sorted(depths) != [0, 1, 2, 3]:
            return  # not a 4-stage MiT: the strict key check reports what is wrong
        found = MiTSpec(tuple(widths[i] for i in range(4)), tuple(depths[i] for i in range(4)))
        if found != self.spec:
            names = [f"mit_{n}" for n, s in MIT_SPECS.items() if s == found]
            what = f" ({names[0]})" if names else ""
            raise ConfigError(
                f"{source} holds a MiT with widths {','.join(map(str, found.widths))} and depths "
                f"{','.join(map(str, found.depths))}{what}, but the model is {self.name} (widths "
                f"{','.join(map(str, self.spec.widths))}, depths "
                f"{','.join(map(str, self.spec.depths))})"
            )
