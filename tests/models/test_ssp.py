import copy
import itertools
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidseg.data.synth import iter_clip, make_config
from vidseg.errors import ConfigError
from vidseg.geometry import rescale_homography, stride_matrix, warp_homography
from vidseg.geometry.registration import Registrar
from vidseg.models import ModelConfig, build_segmenter, count_parameters
from vidseg.models.ssp import SSP, SSPConfig
from vidseg.models.ssp_ops import build_sim_op


def tiny_segmenter(seed=0, num_classes=5):
    torch.manual_seed(seed)
    cfg = ModelConfig(backbone="tiny_cnn", head="upernet", head_channels=16, dropout=0.0)
    model = build_segmenter(cfg, num_classes).eval()
    # A freshly initialised head predicts nearly flat logits; spread them so that predictions
    # vary over the frame and over time, as a trained model's do.
    torch.nn.init.normal_(model.head.classifier.weight, std=3.0)
    return model


@pytest.fixture(scope="module")
def clip():
    """Six consecutive synthetic frames (T, 1, 3, 64, 64) uint8 with their true homographies."""
    cfg = make_config(size=64, frames=6, clips=3, val_clips=0, test_clips=0)
    frames, homs = [], []
    for frame in iter_clip(cfg, "train", 0, with_flow=False):
        frames.append(torch.from_numpy(frame.image).permute(2, 0, 1)[None])
        homs.append(frame.homography)
    return torch.stack(frames), np.stack(homs[1:])[:, None]


def ssp(sim_op="conv", registration="orb", **kw):
    cfg = SSPConfig(sim_op=sim_op, registration={"method": registration}, **kw)
    return SSP(tiny_segmenter(), cfg).eval()


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("conv", 207_841),
        ("convbase", 41_665),
        ("conv2", 347_521),
        ("cossim", 0),
        ("constant", 0),
        ("reuse", 0),
        ("avg", 1),
    ],
)
def test_similarity_op_parameter_counts_match_the_paper_code(name, params):
    # E = 96 (SAM2 Hiera-S stage 1); counts of the official ops (docs/ssp.md).
    assert count_parameters(build_sim_op(name, 96)) == params


def test_ssp_on_hiera_small_upernet_has_43_38m_parameters():
    seg = build_segmenter(ModelConfig(backbone="hiera_small", head_channels=256), 8)
    model = SSP(seg, SSPConfig())
    assert count_parameters(model) == 43_171_528 + 207_841  # 43.38M


@torch.no_grad()
def test_constant_sim_reproduces_the_image_model_exactly(clip):
    frames, _ = clip
    model = ssp("constant")
    state = model.init_state()
    for frame in frames:
        logits, state = model.step(frame, state)
        assert torch.equal(logits, model.segmenter(frame))


@torch.no_grad()
def test_reuse_with_identity_registration_repeats_the_first_prediction(clip):
    frames, _ = clip
    model = ssp("reuse", "identity")
    state = model.init_state()
    first = None
    for frame in frames:
        logits, state = model.step(frame, state)
        first = logits if first is None else first
        torch.testing.assert_close(logits, first, atol=1e-5, rtol=0)
        assert torch.equal(logits.argmax(1), first.argmax(1))
    # ... although the image model's own prediction has moved on.
    assert not torch.allclose(model.segmenter(frames[-1]), first, atol=1e-3)


@torch.no_grad()
@pytest.mark.parametrize(
    ("fuse_at", "registration"), [("full", "orb"), ("stride4", "orb"), ("stride4", "klt")]
)
def test_streaming_equals_the_offline_forward(clip, fuse_at, registration):
    frames, _ = clip
    model = ssp("conv", registration, fuse_at=fuse_at)
    raw = [f.permute(0, 2, 3, 1).numpy() for f in frames]
    homs = np.stack([model.registrar.batch(a, b)[0] for a, b in itertools.pairwise(raw)])
    offline = model.forward_offline(frames, homs)
    state = model.init_state()
    for t, frame in enumerate(frames):
        logits, state = model.step(frame, state)
        torch.testing.assert_close(logits, offline[t], atol=1e-5, rtol=1e-5)
    # The propagation changes the output from frame 1 on.
    assert not torch.allclose(offline[2], model.segmenter(frames[2]), atol=1e-3)


@torch.no_grad()
def test_streaming_prepares_each_frame_once_for_registration(clip, monkeypatch):
    frames, _ = clip
    model = ssp("conv", "klt", fuse_at="stride4")
    calls = []
    original = Registrar._features
    monkeypatch.setattr(
        Registrar, "_features", lambda self, image: calls.append(1) or original(self, image)
    )
    state = model.init_state()
    for frame in frames:
        _, state = model.step(frame, state)
    assert len(calls) == len(frames)
    assert model.registrar.stats.pairs == len(frames) - 1
    assert model.registrar.stats.fallback_count == 0


def reference_fuse(model, prev_logits, prev_features, logits, features, h, image_size):
    """SSP's fusion written out with warp_homography, one warp per map and no shortcut."""
    h_feat = rescale_homography(h, stride_matrix(4))
    h_logits = h if logits.shape[-2:] == image_size else h_feat
    warped_feats, _ = warp_homography(prev_features, h_feat)
    warped, valid = warp_homography(prev_logits, h_logits)
    sim = model.sim_op(warped_feats, features)
    sim = F.interpolate(sim, size=logits.shape[-2:], mode="bilinear", align_corners=False)
    sim = sim * valid.float()
    return sim * warped + (1 - sim) * logits, sim


@torch.no_grad()
@pytest.mark.parametrize("fuse_at", ["full", "stride4"])
@pytest.mark.parametrize("motion", ["registered", "identity"])
def test_fusion_equals_its_definition(clip, fuse_at, motion):
    # fuse shares one sampling grid between the stride-4 maps and skips exact identities.
    frames, homs = clip
    model = ssp("cossim", fuse_at=fuse_at)  # an untrained conv op gives a nearly flat sim
    h = homs[2] if motion == "registered" else np.eye(3)[None]
    seg = model.segmenter
    inputs = []
    for frame in frames[1:3]:
        features = seg.encode(frame)
        inputs += [model._logits(features, 64, 64), features[0]]
    fused, sim = model.fuse(*inputs, h, (64, 64))
    expected, expected_sim = reference_fuse(model, *inputs, h, (64, 64))
    torch.testing.assert_close(sim, expected_sim, atol=1e-5, rtol=0)
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=0)
    assert sim.std() > 0.05  # sim varies: both inputs matter


@torch.no_grad()
def test_registration_in_a_worker_thread_gives_the_same_stream(clip):
    frames, _ = clip
    parallel = ssp("conv", parallel_registration=True)
    serial = copy.deepcopy(parallel)
    serial.config.parallel_registration = False
    states = [None, None]
    for frame in frames:
        a, states[0] = parallel.step(frame, states[0])
        b, states[1] = serial.step(frame, states[1])
        assert torch.equal(a, b)
    # The worker thread is not part of the model's state: it copies and pickles.
    restored = pickle.loads(pickle.dumps(parallel))
    assert torch.equal(restored.step(frames[0], None)[0], parallel.step(frames[0], None)[0])


@torch.no_grad()
def test_pixels_without_a_previous_frame_take_the_current_prediction(clip):
    frames, _ = clip
    model = ssp("reuse")
    shift = np.array([[[1.0, 0.0, 10.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # 10 px right
    seg = model.segmenter
    feats_prev, feats = seg.encode(frames[0]), seg.encode(frames[1])
    prev_logits, logits = seg(frames[0]), seg(frames[1])
    fused, sim = model.fuse(prev_logits, feats_prev[0], logits, feats[0], shift, (64, 64))
    # The first 10 columns have nothing behind them: sim 0 and the current logits, exactly.
    assert torch.equal(fused[..., :10], logits[..., :10])
    assert torch.all(sim[..., :10] == 0)
    torch.testing.assert_close(fused[..., 10:], prev_logits[..., :-10], atol=1e-5, rtol=0)


def test_training_forward_shares_one_backbone_pass_and_trains_everything(clip):
    frames, homs = clip
    model = ssp("conv")
    model.train()
    calls = []
    model.segmenter.backbone.register_forward_hook(lambda *a: calls.append(a[1][0].shape[0]))
    out = model.forward_pair(frames[1].float() / 255, frames[0].float() / 255, homs[0])
    assert calls == [2]  # previous and current frame in one batched pass
    assert out["fused"].shape == (1, 5, 64, 64)
    assert out["prev_logits"].shape == (1, 5, 64, 64)
    assert out["sim"].shape == (1, 1, 64, 64)
    out["fused"].sum().backward()
    assert model.sim_op.net[0].weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.segmenter.parameters())


def test_unknown_options_are_named():
    with pytest.raises(ConfigError, match="did you mean 'conv'"):
        build_sim_op("convv", 8)
    with pytest.raises(ConfigError, match="fuse_at"):
        SSPConfig(fuse_at="half")


@torch.no_grad()
def test_two_pass_formulation_gives_the_same_outputs_with_two_encoder_passes(clip, monkeypatch):
    frames, _ = clip
    one, two = ssp("conv", "identity"), ssp("conv", "identity", recompute_previous=True)
    two.load_state_dict(one.state_dict())
    encoded = []
    original = two.segmenter.encode
    monkeypatch.setattr(two.segmenter, "encode", lambda x: encoded.append(len(x)) or original(x))
    s1 = s2 = None
    for frame in frames:
        a, s1 = one.step(frame, s1)
        b, s2 = two.step(frame, s2)
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    # The first frame alone, then the previous and the current frame batched at every step.
    assert encoded == [1] + [2] * (len(frames) - 1)
    assert s1.frame is None
    assert torch.equal(s2.frame, frames[-1])


@torch.no_grad()
def test_state_keeps_the_similarity_map_of_its_frame(clip):
    frames, _ = clip
    model = ssp("conv", "identity")
    _, state = model.step(frames[0], None)
    assert state.sim is None
    _, state = model.step(frames[1], state)
    _, expected = model.fuse(
        model.segmenter(frames[0]),
        model.segmenter.encode(frames[0])[0],
        model.segmenter(frames[1]),
        model.segmenter.encode(frames[1])[0],
        np.eye(3)[None],
        (64, 64),
    )
    torch.testing.assert_close(state.sim, expected)
    assert 0 < float(state.sim.min()) <= float(state.sim.max()) < 1
