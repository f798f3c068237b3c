"""SAM2's Hiera image encoder trunk (``transformers``' ``Sam2HieraDetModel``) as a backbone.

Sizes follow the SAM2 configurations (sam2_hiera_{t,s,b+,l}.yaml). Weights load from an original
SAM2 checkpoint (``sam2_hiera_*.pt`` / ``sam2.1_hiera_*.pt``: the ``image_encoder.trunk.`` keys),
from a Hugging Face ``Sam2Model`` (``vision_encoder.backbone.`` keys) or ``Sam2HieraDetModel``
folder, or from a state dict in this module's own names (``model.<Sam2HieraDetModel key>``).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from torch import Tensor, nn

from vidseg.errors import ConfigError
from vidseg.models.backbones.base import Backbone, Checkpoint, ConvertedState, split_prefix


@dataclass(frozen=True)
class HieraSpec:
    """One SAM2 Hiera size; ``global_blocks`` are the blocks with global (unwindowed) attention."""

    embed_dim: int
    heads: int
    blocks: tuple[int, int, int, int]
    global_blocks: tuple[int, ...]
    window_spec: tuple[int, int, int, int] = (8, 4, 14, 7)
    bkg_pos_embed: tuple[int, int] = (7, 7)

    @property
    def channels(self) -> tuple[int, int, int, int]:
        return tuple(self.embed_dim * 2**i for i in range(4))


HIERA_SPECS = {
    "tiny": HieraSpec(96, 1, (1, 2, 7, 2), (5, 7, 9)),
    "small": HieraSpec(96, 1, (1, 2, 11, 2), (7, 10, 13)),
    "base_plus": HieraSpec(112, 2, (2, 3, 16, 3), (12, 16, 20), bkg_pos_embed=(14, 14)),
    "large": HieraSpec(144, 2, (2, 6, 36, 4), (23, 33, 43), window_spec=(8, 4, 16, 8)),
}

SAM2_TRUNK_PREFIX = "image_encoder.trunk."
HF_SAM2_PREFIX = "vision_encoder.backbone."
# Original SAM2 module names -> transformers' Sam2HieraDetModel names (same tensors, no reshaping).
_SAM2_TO_HF = (
    ("patch_embed.proj.", "patch_embed.projection."),
    (".norm1.", ".layer_norm1."),
    (".norm2.", ".layer_norm2."),
    (".mlp.layers.0.", ".mlp.proj_in."),
    (".mlp.layers.1.", ".mlp.proj_out."),
)
_BLOCK = re.compile(r"model\.blocks\.(\d+)\.")


def _rename(key: str, pairs: tuple[tuple[str, str], ...], reverse: bool = False) -> str:
    for old, new in pairs:
        key = key.replace(new, old) if reverse else key.replace(old, new)
    return key


class StochasticDepth:
    """Forward hook that drops a residual block's whole update per sample while training.

    For a block ``y = x + f(x)`` it returns ``x + mask * (y - x) / (1 - rate)``, with one Bernoulli
    ``mask`` per sample: transformers' Sam2HieraDetModel has no drop-path of its own.
    """

    def __init__(self, rate: float):
        self.rate = rate

    def __call__(
        self, module: nn.Module, args: tuple, kwargs: dict, output: Tensor
    ) -> Tensor | None:
        if not module.training or self.rate == 0:
            return None
        x = args[0] if args else kwargs["hidden_states"]
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x + (output - x) * (mask / keep)


class HieraBackbone(Backbone):
    """SAM2 Hiera trunk; outputs the 4 stage ends as NCHW (transformers returns them NHWC)."""

    def __init__(self, size: str, drop_path: float = 0.0):
        super().__init__()
        from transformers import Sam2HieraDetConfig, Sam2HieraDetModel

        spec = HIERA_SPECS[size]
        self.name = f"hiera_{size}"
        self.spec = spec
        self.channels = spec.channels
        config = Sam2HieraDetConfig(
            hidden_size=spec.embed_dim,
            num_attention_heads=spec.heads,
            blocks_per_stage=list(spec.blocks),
            embed_dim_per_stage=list(spec.channels),
            num_attention_heads_per_stage=[spec.heads * 2**i for i in range(4)],
            window_size_per_stage=list(spec.window_spec),
            global_attention_blocks=list(spec.global_blocks),
            window_positional_embedding_background_size=list(spec.bkg_pos_embed),
        )
        self.model = Sam2HieraDetModel(config)
        self.drop_path_rates = self._add_stochastic_depth(drop_path)

    def _add_stochastic_depth(self, drop_path: float) -> list[float]:
        """Linearly increasing rates over the blocks (SAM2's rule); 0 where the width changes.

        The first block of a stage changes the width (its shortcut is a projection), so it cannot
        be skipped and keeps rate 0.
        """
        blocks = self.model.blocks
        rates = [drop_path * i / max(len(blocks) - 1, 1) for i in range(len(blocks))]
        rates = [r if b.dim == b.dim_out else 0.0 for b, r in zip(blocks, rates, strict=True)]
        for block, rate in zip(blocks, rates, strict=True):
            if rate > 0:
                block.register_forward_hook(StochasticDepth(rate), with_kwargs=True)
        return rates

    def forward_features(self, x: Tensor) -> list[Tensor]:
        out = self.model(pixel_values=x)
        return [h.permute(0, 3, 1, 2) for h in out.intermediate_hidden_states]

    def convert_state_dict(self, checkpoint: Checkpoint) -> ConvertedState:
        tensors = checkpoint.tensors
        if any(k.startswith(SAM2_TRUNK_PREFIX) for k in tensors):
            # Original SAM2: only the trunk is ours; neck, prompt encoder, mask decoder and the
            # memory modules are SAM's and are left out.
            trunk = {k: v for k, v in tensors.items() if k.startswith(SAM2_TRUNK_PREFIX)}
            origin = {
                "model." + _rename(k[len(SAM2_TRUNK_PREFIX) :], _SAM2_TO_HF): k for k in trunk
            }
            converted = {own: trunk[k] for own, k in origin.items()}

            def source_name(own: str) -> str:
                return SAM2_TRUNK_PREFIX + _rename(own.removeprefix("model."), _SAM2_TO_HF, True)

        else:
            if any(k.startswith(HF_SAM2_PREFIX) for k in tensors):
                # A full HF Sam2Model / Sam2VideoModel: keep the vision backbone, drop the rest.
                prefix = HF_SAM2_PREFIX
                bare = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            elif all(k.startswith("model.") for k in tensors):
                prefix = "model."
                bare = split_prefix(tensors, prefix)
            else:  # a Sam2HieraDetModel folder: its own names, without prefix
                prefix = ""
                bare = dict(tensors)
            origin = {"model." + k: prefix + k for k in bare}
            converted = {"model." + k: v for k, v in bare.items()}

            def source_name(own: str) -> str:
                return prefix + own.removeprefix("model.")

        self._check_architecture(converted, checkpoint.source)
        return ConvertedState(converted, origin, source_name)

    def _check_architecture(self, tensors: dict[str, Tensor], source: str) -> None:
        patch = tensors.get("model.patch_embed.projection.weight")
        block_ids = {int(m.group(1)) for k in tensors if (m := _BLOCK.match(k))}
        if patch is None or not block_ids:
            return  # not a Hiera at all: the strict key check reports it
        # A block with its own "proj" (the shortcut projection) starts a new, wider stage.
        starts = sorted(i for i in block_ids if f"model.blocks.{i}.proj.weight" in tensors)
        bounds = [0, *starts, max(block_ids) + 1]
        found = (int(patch.shape[0]), tuple(b - a for a, b in itertools.pairwise(bounds)))
        expected = (self.spec.embed_dim, self.spec.blocks)
        if found != expected:
            sizes = [n for n, s in HIERA_SPECS.items() if (s.embed_dim, s.blocks) == found]
            what = f" (hiera_{sizes[0]})" if sizes else ""
            raise ConfigError(
                f"{source} holds a Hiera with embed dim {found[0]} and blocks per stage "
                f"{','.join(map(str, found[1]))}{what}, but the model is {self.name} (embed dim "
                f"{expected[0]}, blocks {','.join(map(str, expected[1]))})"
            )
