"""RAFT: checkpoint key facts, strict loading, correlation and upsampling maths, the estimator."""

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidseg.errors import ConfigError
from vidseg.flow.base import FlowEstimator
from vidseg.flow.raft import (
    RAFT,
    CorrPyramid,
    RaftFlow,
    bilinear_upsample,
    build_raft,
    convex_upsample,
    load_raft,
    pad_amounts,
    save_raft,
    scale_frames,
)

# Key -> shape of the official models' state dicts, recorded from princeton-vl/RAFT's code.
OFFICIAL_KEYS = json.loads(Path(__file__).with_name("raft_keys.json").read_text())
# Distinct parameters of the official models (shared BatchNorms counted once).
OFFICIAL_PARAMS = {"raft": 5_257_536, "raft_small": 990_162}
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _network(small: bool, seed: int = 0) -> RAFT:
    """A seeded network whose BatchNorm statistics are not the identity, in eval mode."""
    torch.manual_seed(seed)
    model = RAFT(small=small)
    generator = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(n, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def full() -> RAFT:
    return _network(small=False)


@pytest.fixture(scope="module")
def small() -> RAFT:
    return _network(small=True)


def _frames(height: int, width: int, batch: int = 1, seed: int = 0) -> tuple:
    """A smooth random texture and a copy moved by (dx, dy) = (3, 2): (B, 3, H, W) uint8."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, height // 4 + 4, width // 4 + 4, generator=generator)
    texture = F.interpolate(coarse, scale_factor=4, mode="bilinear", align_corners=False)
    texture = (texture * 255).round().to(torch.uint8)
    src = texture[..., 8 : 8 + height, 8 : 8 + width]
    dst = texture[..., 6 : 6 + height, 5 : 5 + width]
    return src.contiguous(), dst.contiguous()


def _official_scale(images: torch.Tensor) -> torch.Tensor:
    return 2 * (images.float() / 255.0) - 1.0


# --- checkpoint facts and loading ---------------------------------------------------------------


@pytest.mark.parametrize("variant", ["raft", "raft_small"])
def test_state_dict_has_the_official_key_names_and_shapes(variant):
    model = RAFT(small=variant == "raft_small")
    ours = {key: list(value.shape) for key, value in model.state_dict().items()}
    assert ours == OFFICIAL_KEYS[variant]
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[variant]


def test_full_model_has_a_batch_norm_context_net_and_a_mask_head_small_has_neither():
    assert "cnet.norm1.running_var" in OFFICIAL_KEYS["raft"]
    assert OFFICIAL_KEYS["raft"]["update_block.mask.2.weight"] == [576, 256, 1, 1]
    assert not any(
        k.startswith(("cnet.norm", "update_block.mask")) for k in OFFICIAL_KEYS["raft_small"]
    )


def test_dataparallel_prefixed_checkpoint_loads_and_gives_the_same_flow(full, tmp_path):
    path = tmp_path / "raft-things.pth"
    torch.save({f"module.{k}": v for k, v in full.state_dict().items()}, path)
    loaded = load_raft(path, iters=3)
    src, dst = _frames(64, 96)
    assert torch.equal(loaded.batch(src, dst), RaftFlow(full, iters=3).batch(src, dst))
    settings = loaded.settings()
    assert settings["weights"] == "raft-things.pth"
    assert settings["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (loaded.name, settings["variant"], settings["iters"]) == ("raft", "raft", 3)


def test_wrapped_state_dict_and_absent_batch_counters_load(full, tmp_path):
    state = {k: v for k, v in full.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    loaded = load_raft(path).model
    for key, value in full.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("is_small", [False, True])
def test_save_and_load_round_trip_is_bit_exact(full, small, is_small, suffix, tmp_path):
    model = small if is_small else full
    path = tmp_path / f"ours{suffix}"
    save_raft(RaftFlow(model, iters=2), path)
    loaded = load_raft(path, small=is_small, iters=2)
    src, dst = _frames(64, 72, seed=1)
    assert loaded.name == ("raft_small" if is_small else "raft")
    assert torch.equal(loaded.batch(src, dst), RaftFlow(model, iters=2).batch(src, dst))


def test_a_checkpoint_of_the_other_variant_is_named_as_such(full, small, tmp_path):
    full_path, small_path = tmp_path / "raft-things.pth", tmp_path / "raft-small.pth"
    torch.save(full.state_dict(), full_path)
    torch.save(small.state_dict(), small_path)
    with pytest.raises(ConfigError, match=r"raft-things\.pth: this looks like a full RAFT"):
        load_raft(full_path, small=True)
    with pytest.raises(ConfigError, match=r"raft-small\.pth: this looks like a RAFT-small .*"):
        load_raft(small_path, small=False)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("drop", "missing keys 'update_block.flow_head.conv2.bias'"),
        ("extra", "unexpected keys 'head.weight'"),
        (
            "reshape",
            "wrongly shaped keys 'fnet.conv1.weight' ('fnet.conv1.weight' is (64, 3, 5, 5)",
        ),
    ],
)
def test_strict_loading_errors_are_one_line_and_name_file_and_keys(full, tmp_path, edit, expected):
    state = dict(full.state_dict())
    if edit == "drop":
        del state["update_block.flow_head.conv2.bias"]
    elif edit == "extra":
        state["head.weight"] = torch.zeros(3)
    else:
        state["fnet.conv1.weight"] = torch.zeros(64, 3, 5, 5)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    with pytest.raises(ConfigError) as info:
        load_raft(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert expected in message


def test_missing_and_corrupt_files_give_config_errors_naming_the_path(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(ConfigError, match=re.escape(f"{missing}: no such file")):
        load_raft(missing)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match=re.escape(f"{corrupt}: cannot read it")):
        load_raft(corrupt)
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(ConfigError, match="expected a state dict"):
        load_raft(listing)


@pytest.mark.parametrize(
    ("is_small", "file"), [(False, "raft-things.pth"), (True, "raft-small.pth")]
)
def test_build_without_weights_says_where_to_get_them_and_how_to_pass_them(is_small, file):
    with pytest.raises(ConfigError) as info:
        build_raft(small=is_small)
    message = str(info.value)
    assert "\n" not in message
    assert "github.com/princeton-vl/RAFT" in message
    assert "models.zip" in message
    name = "raft_small" if is_small else "raft"
    assert f"vidseg.flow.build('{name}', weights='models/{file}')" in message
    assert "load_raft(" in message


def test_random_weights_are_seeded_and_keyed_apart():
    one, two = build_raft("random", iters=4), build_raft("random", iters=4)
    for key, value in one.model.state_dict().items():
        assert torch.equal(value, two.model.state_dict()[key]), key
    assert isinstance(one, FlowEstimator)
    assert one.settings() == {
        "variant": "raft",
        "iters": 4,
        "input_norm": "raft",
        "padding": "sintel",
        "weights": "random",
        "seed": 0,
    }
    keys = {
        one.key,
        build_raft("random", iters=5).key,
        build_raft("random", iters=4, input_norm="imagenet").key,
        build_raft("random", small=True, iters=4).key,
    }
    assert len(keys) == 4
    assert build_raft("random", small=True).name == "raft_small"


def test_estimators_of_other_weights_have_other_cache_keys(full):
    assert RaftFlow(full).key == RaftFlow(full).key
    assert RaftFlow(full).key != RaftFlow(_network(small=False, seed=1)).key
    assert RaftFlow(full).settings()["weights"] == "state_dict"


def test_invalid_options_are_config_errors(full):
    with pytest.raises(ConfigError, match="iters"):
        RaftFlow(full, iters=0)
    with pytest.raises(
        ConfigError, match="unknown RAFT input_norm 'imgnet'; did you mean 'imagenet'"
    ):
        RaftFlow(full, input_norm="imgnet")
    with pytest.raises(ConfigError, match="unknown RAFT padding"):
        RaftFlow(full, padding="center")
    with pytest.raises(ConfigError, match="RAFT input 64x60"):
        full(torch.zeros(1, 3, 64, 60), torch.zeros(1, 3, 64, 60), iters=1)


# --- correlation, lookup and upsampling against independent computations -----------------------


def _bilinear_zero_padded(image: np.ndarray, x: float, y: float) -> float:
    """Bilinear interpolation of a 2-D array at (x, y), pixels outside it being zero."""
    x0, y0 = math.floor(x), math.floor(y)
    total = 0.0
    for xi, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
        for yi, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            if 0 <= xi < image.shape[1] and 0 <= yi < image.shape[0]:
                total += wx * wy * float(image[yi, xi])
    return total


def _naive_lookup(f1, f2, coords, levels, radius):
    """Explicit dot products, 2x2 block averages and bilinear sampling, one number at a time."""
    channels, height, width = f1.shape
    volume = np.zeros((height, width, height, width))
    for y1, x1, y2, x2 in np.ndindex(height, width, height, width):
        dot = sum(float(f1[c, y1, x1]) * float(f2[c, y2, x2]) for c in range(channels))
        volume[y1, x1, y2, x2] = dot / math.sqrt(channels)
    pyramid = [volume]
    for _ in range(levels - 1):
        prev = pyramid[-1]
        h, w = prev.shape[2] // 2, prev.shape[3] // 2
        pooled = np.zeros((height, width, h, w))
        for i, j in np.ndindex(h, w):
            pooled[:, :, i, j] = prev[:, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean(axis=(2, 3))
        pyramid.append(pooled)
    side = 2 * radius + 1
    out = np.zeros((levels * side * side, height, width))
    for y1, x1 in np.ndindex(height, width):
        cx, cy = coords[0, y1, x1], coords[1, y1, x1]
        for level, vol in enumerate(pyramid):
            for i, j in np.ndindex(side, side):
                # The official channel order: the x offset is the slower-varying one.
                x, y = cx / 2**level + (i - radius), cy / 2**level + (j - radius)
                channel = level * side * side + i * side + j
                out[channel, y1, x1] = _bilinear_zero_padded(vol[y1, x1], x, y)
    return out


def test_correlation_lookup_matches_explicit_dot_products_and_bilinear_sampling():
    generator = torch.Generator().manual_seed(3)
    f1 = torch.randn(1, 5, 4, 6, generator=generator)
    f2 = torch.randn(1, 5, 4, 6, generator=generator)
    # Non-integer positions, positions beyond every border, and exact pixel centres.
    coords = torch.stack(torch.meshgrid(torch.arange(6.0), torch.arange(4.0), indexing="xy"))
    coords = coords + 2.6 * torch.randn(2, 4, 6, generator=generator)
    coords[:, 0, 0] = torch.tensor([-3.5, 9.25])
    coords[:, 1, 1] = torch.tensor([2.0, 1.0])
    levels, radius = 3, 1  # level sizes 4x6, 2x3 and 1x1
    ours = CorrPyramid(f1, f2, levels=levels, radius=radius)(coords[None])[0].numpy()
    expected = _naive_lookup(f1[0].numpy(), f2[0].numpy(), coords.numpy(), levels, radius)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    # At (-3.5, 9.25) the whole level-0 window lies outside the 4x6 volume.
    assert np.all(ours[:9, 0, 0] == 0)
    assert np.count_nonzero(expected) > expected.size // 3


def test_correlation_volume_is_scaled_by_the_square_root_of_the_channels():
    f1 = torch.zeros(1, 4, 8, 8)
    f2 = torch.zeros(1, 4, 8, 8)
    f1[0, :, 2, 3] = 1.0
    f2[0, :, 5, 1] = 2.0
    pyramid = CorrPyramid(f1, f2, levels=1, radius=0)
    assert pyramid.levels[0].shape == (64, 1, 8, 8)
    assert pyramid.levels[0][2 * 8 + 3, 0, 5, 1] == pytest.approx(4 * 2.0 / math.sqrt(4))
    assert pyramid.levels[0].abs().sum() == pytest.approx(4.0)


def test_convex_upsampling_matches_a_loop_over_subpixels_and_neighbours():
    generator = torch.Generator().manual_seed(4)
    flow = torch.randn(1, 2, 2, 3, generator=generator)
    mask = torch.randn(1, 9 * 64, 2, 3, generator=generator)
    ours = convex_upsample(flow, mask)[0].numpy()
    expected = np.zeros((2, 16, 24))
    logits = mask[0].numpy().reshape(9, 8, 8, 2, 3)
    for h, w, a, b in np.ndindex(2, 3, 8, 8):
        weights = np.exp(logits[:, a, b, h, w]) / np.exp(logits[:, a, b, h, w]).sum()
        for k in range(9):
            nh, nw = h + k // 3 - 1, w + k % 3 - 1
            if 0 <= nh < 2 and 0 <= nw < 3:
                expected[:, 8 * h + a, 8 * w + b] += weights[k] * 8 * flow[0, :, nh, nw].numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_bilinear_upsampling_scales_by_eight_and_keeps_the_corners():
    flow = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.5, 0.5], [-1.0, -1.0]]]])
    up = bilinear_upsample(flow)
    assert up.shape == (1, 2, 16, 16)
    assert up[0, :, 0, 0].tolist() == [8.0, 4.0]
    assert up[0, :, 15, 15].tolist() == [32.0, -8.0]
    assert torch.allclose(up[0, 0].mean(), torch.tensor(20.0))


# --- the estimator ------------------------------------------------------------------------------


def test_padding_is_the_official_centred_replicate_pad_then_crop(full):
    src, dst = _frames(70, 100)
    flow = RaftFlow(full, iters=2).batch(src, dst)
    assert flow.shape == (1, 2, 70, 100)
    assert flow.dtype == torch.float32
    assert torch.isfinite(flow).all()  # 1/8 size 9x13: the coarsest level is 1x1
    # The official InputPadder: pad (70, 100) to (72, 104) by [w//2, w - w//2, h//2, h - h//2].
    assert pad_amounts(70, 100) == (2, 2, 1, 1)
    assert pad_amounts(70, 100, "kitti") == (2, 2, 0, 2)
    x1, x2 = (F.pad(x.float(), (2, 2, 1, 1), mode="replicate") for x in (src, dst))
    with torch.no_grad():
        _, manual = full(_official_scale(x1), _official_scale(x2), iters=2, test_mode=True)
    assert torch.equal(flow, manual[..., 1:71, 2:102])


def test_frames_under_64_pixels_are_padded_up(small):
    src, dst = _frames(40, 52)
    assert pad_amounts(40, 52) == (6, 6, 12, 12)
    flow = RaftFlow(small, iters=2).batch(src, dst)
    assert flow.shape == (1, 2, 40, 52)
    assert torch.isfinite(flow).all()


def test_imagenet_input_norm_feeds_normalised_frames_to_the_network(full):
    src, dst = _frames(64, 80, seed=2)
    default = RaftFlow(full, iters=2).batch(src, dst)
    imagenet = RaftFlow(full, iters=2, input_norm="imagenet").batch(src, dst)
    x1, x2 = ((x.float() / 255.0 - IMAGENET_MEAN) / IMAGENET_STD for x in (src, dst))
    with torch.no_grad():
        _, manual = full(x1, x2, iters=2, test_mode=True)
    torch.testing.assert_close(imagenet, manual, rtol=0, atol=1e-5)
    assert (imagenet - default).abs().max() > 1e-2
    torch.testing.assert_close(scale_frames(src, "imagenet"), x1, rtol=0, atol=1e-6)


def test_numpy_call_equals_batch_and_float_frames_equal_uint8_frames(small):
    src, dst = _frames(64, 88, batch=2, seed=5)
    estimator = RaftFlow(small, iters=3)
    batched = estimator.batch(src, dst)
    single = estimator(src[1].permute(1, 2, 0).numpy(), dst[1].permute(1, 2, 0).numpy())
    assert single.shape == (64, 88, 2)
    assert single.dtype == np.float32
    alone = estimator.batch(src[1:], dst[1:])
    np.testing.assert_array_equal(single, alone[0].permute(1, 2, 0).numpy())
    # Pairs are independent: the second one alone gives what it gave in the batch (up to the
    # rounding of batched convolutions).
    torch.testing.assert_close(alone, batched[1:], rtol=0, atol=1e-4)
    assert torch.equal(estimator.batch(src.float() / 255.0, dst.float() / 255.0), batched)


def test_training_mode_returns_every_iteration_and_backpropagates():
    model = RAFT(small=False).train()
    src, dst = _frames(64, 64, batch=2, seed=6)
    flows = model(_official_scale(src), _official_scale(dst), iters=3)
    assert len(flows) == 3
    assert all(f.shape == (2, 2, 64, 64) for f in flows)
    sum(f.abs().mean() for f in flows).backward()
    for name in ("fnet.conv1.weight", "cnet.conv1.weight", "update_block.mask.2.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None, name
        assert grad.abs().sum() > 0, name


def test_flow_init_starts_the_iterations(small):
    src, dst = _frames(64, 64, seed=7)
    x1, x2 = _official_scale(src), _official_scale(dst)
    with torch.no_grad():
        coarse, _ = small(x1, x2, iters=1, test_mode=True)
        again, _ = small(x1, x2, iters=1, flow_init=torch.zeros(1, 2, 8, 8), test_mode=True)
        moved, _ = small(x1, x2, iters=1, flow_init=torch.full((1, 2, 8, 8), 3.0), test_mode=True)
    assert torch.equal(coarse, again)
    assert (moved - coarse).abs().mean() > 1.0


# --- optional: the official code ----------------------------------------------------------------

_OFFICIAL = os.environ.get("VIDSEG_OFFICIAL_RAFT", "")

# Runs in a subprocess: the official modules are called raft, corr, utils... and would shadow or
# be shadowed by other imports in the test process.
_OFFICIAL_SCRIPT = """
import argparse, sys, types, warnings
warnings.filterwarnings("ignore")
core, out, small = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
try:
    import scipy.interpolate
except ImportError:  # only forward_interpolate, which we do not call, needs it
    sys.modules["scipy"] = types.ModuleType("scipy")
    sys.modules["scipy.interpolate"] = types.ModuleType("scipy.interpolate")
    sys.modules["scipy"].interpolate = sys.modules["scipy.interpolate"]
sys.path.insert(0, core)
import torch
from raft import RAFT
from utils.utils import InputPadder
data = torch.load(out + "/frames.pt")
torch.manual_seed(0)
args = argparse.Namespace(small=small, mixed_precision=False, alternate_corr=False, dropout=0)
model = RAFT(args)
generator = torch.Generator().manual_seed(1)
for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=generator))
        m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=generator))
        m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=generator))
torch.save({"module." + k: v for k, v in model.state_dict().items()}, out + "/official.pth")
results = {}
model.eval()
with torch.no_grad():
    padder = InputPadder(data["src"].shape)
    image1, image2 = padder.pad(data["src"].float(), data["dst"].float())
    for iters in (12, 20):
        results[iters] = padder.unpad(model(image1, image2, iters=iters, test_mode=True)[1])
model.train()
results["train"] = [f.detach() for f in model(data["a"], data["b"], iters=4)]
torch.save(results, out + "/official_out.pt")
"""


@pytest.mark.skipif(
    not _OFFICIAL,
    reason="set VIDSEG_OFFICIAL_RAFT to a princeton-vl/RAFT checkout (the folder holding core/)",
)
@pytest.mark.parametrize("is_small", [False, True])
def test_matches_the_official_code(tmp_path, is_small):
    core = Path(_OFFICIAL) / "core"
    assert (core / "raft.py").is_file(), f"no core/raft.py under VIDSEG_OFFICIAL_RAFT={_OFFICIAL}"
    # 130x190 pads to 136x192; every pyramid level has sides >= 2 there, so the official
    # lookup is finite.
    src, dst = _frames(130, 190, seed=8)
    a, b = _frames(128, 160, batch=2, seed=9)
    torch.save({"src": src, "dst": dst, "a": a.float(), "b": b.float()}, tmp_path / "frames.pt")
    subprocess.run(
        [sys.executable, "-c", _OFFICIAL_SCRIPT, str(core), str(tmp_path), str(int(is_small))],
        check=True,
    )
    official = torch.load(tmp_path / "official_out.pt")
    for iters in (12, 20):
        ours = load_raft(tmp_path / "official.pth", small=is_small, iters=iters).batch(src, dst)
        torch.testing.assert_close(ours, official[iters], rtol=0, atol=1e-4)
    model = load_raft(tmp_path / "official.pth", small=is_small).model.train()
    flows = model(_official_scale(a), _official_scale(b), iters=4)
    assert len(flows) == len(official["train"])
    for ours, theirs in zip(flows, official["train"], strict=True):
        torch.testing.assert_close(ours.detach(), theirs, rtol=0, atol=1e-4)
