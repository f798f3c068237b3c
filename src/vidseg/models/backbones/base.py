"""The backbone interface and strict loading of pretrained weights.

A backbone takes a normalised float tensor (B, 3, H, W), with H and W multiples of
``size_divisor``, and returns 4 NCHW feature maps at strides 4, 8, 16 and 32 (shallow first).

Weights are given as one string: a file (``.safetensors``, ``.pt``/``.pth``/``.bin``), a Hugging
Face model folder (``config.json`` + ``model.safetensors``), or a hub id resolved from the local
Hugging Face cache. Each backbone converts the tensors it finds into its own parameter names;
loading is strict: a missing, unexpected or wrongly shaped key is a :class:`ConfigError`.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from vidseg.errors import ConfigError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

STATE_DICT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
# How many key names an error message lists before it says "and N more".
_KEYS_SHOWN = 4
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def unknown_name_error(kind: str, value: str, valid: list[str], key: str = "") -> ConfigError:
    """``[key: ]unknown <kind> 'x'; did you mean 'y'? valid: ...`` (closest name by difflib)."""
    close = difflib.get_close_matches(value, valid, n=1, cutoff=0.0)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    where = f"{key}: " if key else ""
    return ConfigError(f"{where}unknown {kind} '{value}'{hint} valid: {', '.join(sorted(valid))}")


def format_keys(keys: Iterable[str]) -> str:
    """``'a', 'b', 'c' and 5 more``: a bounded list of key names for one-line messages."""
    keys = list(keys)
    shown = ", ".join(f"'{k}'" for k in keys[:_KEYS_SHOWN])
    rest = len(keys) - _KEYS_SHOWN
    return f"{shown} and {rest} more" if rest > 0 else shown


@dataclass
class Checkpoint:
    """Tensors read from ``source``; ``config`` is the ``config.json`` of a Hugging Face folder."""

    tensors: dict[str, Tensor]
    source: str
    config: dict | None = None


@dataclass
class ConvertedState:
    """A checkpoint translated into a backbone's own parameter names.

    ``origin`` gives, for each own key, the name it had in the checkpoint (error messages speak
    the checkpoint's language); ``source_name`` does the same for keys the checkpoint lacks.
    ``optional`` own keys may be absent and then keep their initial values.
    """

    tensors: dict[str, Tensor]
    origin: dict[str, str] = field(default_factory=dict)
    source_name: Callable[[str], str] = str
    optional: frozenset[str] = frozenset()


def _read_state_file(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure means an unusable file
        raise ConfigError(f"cannot read weights file {path}: {exc}") from exc
    # SAM2 checkpoints wrap the weights in {"model": ...}; Lightning/mmseg ones in "state_dict".
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ConfigError(f"weights file {path} does not hold a state dict of tensors")
    return obj


def _read_hf_folder(folder: Path) -> Checkpoint:
    config = None
    config_file = folder / "config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {config_file}: {exc}") from exc
    tensors: dict[str, Tensor] = {}
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError) as exc:
                raise ConfigError(f"cannot read shard index {index}: {exc}") from exc
            for shard in shards:
                tensors.update(_read_state_file(folder / shard))
            return Checkpoint(tensors, str(folder), config)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return Checkpoint(_read_state_file(folder / name), str(folder), config)
    raise ConfigError(
        f"weights folder {folder} holds no model.safetensors or pytorch_model.bin "
        "(expected a Hugging Face model folder)"
    )


def _download_cached(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        folder = snapshot_download(
            repo_id,
            allow_patterns=["config.json", "*.safetensors", "*.index.json", "pytorch_model*.bin"],
        )
    except (OSError, ValueError, EntryNotFoundError) as exc:
        raise ConfigError(
            f"weights '{repo_id}' is not a local file or folder and is not in the Hugging Face "
            f"cache; download it where there is network access (huggingface-cli download "
            f"{repo_id} --local-dir DIR) and pass the folder DIR instead"
        ) from exc
    return Path(folder)


def read_checkpoint(weights: str) -> Checkpoint:
    """Read the tensors named by ``weights``: a state-dict file, a HF folder, or a cached hub id."""
    path = Path(weights).expanduser()
    if path.is_dir():
        return _read_hf_folder(path)
    if path.is_file():
        if path.suffix not in STATE_DICT_SUFFIXES:
            raise ConfigError(
                f"weights file {path}: unknown format (expected one of "
                f"{', '.join(STATE_DICT_SUFFIXES)} or a Hugging Face model folder)"
            )
        return Checkpoint(_read_state_file(path), str(path))
    if path.suffix in STATE_DICT_SUFFIXES or not _HUB_ID.fullmatch(weights):
        raise ConfigError(f"weights '{weights}': no such file or folder")
    return _read_hf_folder(_download_cached(weights))


def split_prefix(
    tensors: Mapping[str, Tensor], prefix: str, ignore: tuple[str, ...] = ()
) -> dict[str, Tensor]:
    """Keys with ``prefix`` removed where present; keys starting with an ``ignore`` entry dropped.

    Every other key is kept unchanged, so that it surfaces as unexpected when loading.
    """
    out = {}
    for key, value in tensors.items():
        if key.startswith(ignore):
            continue
        out[key.removeprefix(prefix)] = value
    return out


def load_converted(
    module: nn.Module, state: ConvertedState, checkpoint: Checkpoint, what: str
) -> None:
    """Load ``state`` into ``module`` after checking every key and shape; ConfigError otherwise."""
    source = checkpoint.source
    own = module.state_dict()
    if own and not set(state.tensors) & set(own):
        model_type = (checkpoint.config or {}).get("model_type")
        kind = f" (its config.json says model_type '{model_type}')" if model_type else ""
        raise ConfigError(
            f"{source} does not hold {what} weights{kind}: none of its {len(state.tensors)} "
            f"keys match (first: {format_keys(list(state.tensors)[:_KEYS_SHOWN])})"
        )
    unexpected = [state.origin.get(k, k) for k in state.tensors if k not in own]
    if unexpected:
        raise ConfigError(
            f"{source}: {len(unexpected)} unexpected key(s) for {what}: {format_keys(unexpected)}"
        )
    missing = [k for k in own if k not in state.tensors and k not in state.optional]
    if missing:
        raise ConfigError(
            f"{source}: {len(missing)} key(s) missing for {what}: "
            f"{format_keys(state.source_name(k) for k in missing)}"
        )
    wrong = [
        f"'{state.origin.get(k, k)}' is {tuple(v.shape)}, {what} expects {tuple(own[k].shape)}"
        for k, v in state.tensors.items()
        if v.shape != own[k].shape
    ]
    if wrong:
        raise ConfigError(f"{source}: shape mismatch: {'; '.join(wrong[:_KEYS_SHOWN])}")
    module.load_state_dict(state.tensors, strict=False)
    skipped = [k for k in own if k not in state.tensors]
    if skipped:
        log.info(
            "%s: %d tensors of %s not in the checkpoint keep their initial values: %s",
            source,
            len(skipped),
            what,
            format_keys(skipped),
        )
    log.info("loaded %d tensors from %s into %s", len(state.tensors), source, what)


class Backbone(nn.Module):
    """A feature pyramid: normalised (B, 3, H, W) -> 4 NCHW maps at strides 4, 8, 16, 32.

    ``channels`` are the channels of the 4 levels; H and W must be multiples of
    ``size_divisor``; ``mean``/``std`` are the per-channel RGB normalisation (on 0..1 values) the
    backbone was trained with.
    """

    name: str = "backbone"
    channels: tuple[int, int, int, int]
    strides: tuple[int, int, int, int] = (4, 8, 16, 32)
    size_divisor: int = 32
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def forward(self, x: Tensor) -> list[Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected a (B, 3, H, W) tensor, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.size_divisor or w % self.size_divisor:
            raise ValueError(
                f"{self.name}: input size {h}x{w} is not a multiple of {self.size_divisor} "
                "(Segmenter pads automatically)"
            )
        return self.forward_features(x)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The 4 feature maps of an already checked input."""
        raise NotImplementedError

    def convert_state_dict(self, checkpoint: Checkpoint) -> ConvertedState:
        """Translate a checkpoint into this module's names; the default takes them as they are."""
        return ConvertedState(dict(checkpoint.tensors))

    def load_weights(self, weights: str) -> None:
        """Load pretrained weights (see the module docstring for the accepted forms), strictly."""
        checkpoint = read_checkpoint(weights)
        load_converted(self, self.convert_state_dict(checkpoint), checkpoint, self.name)
