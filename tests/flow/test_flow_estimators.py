import json

import cv2
import numpy as np
import pytest
import torch

from vidseg.data import open_dataset, synthesize
from vidseg.errors import ConfigError, DataError
from vidseg.flow import DisFlow, FarnebackFlow, FlowCache, GroundTruthFlow, build, endpoint_error


def textured(height=96, width=128, seed=0):
    """Smoothed noise: texture at several scales, as flow estimators need."""
    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 3), np.float32)
    for sigma in (1.0, 3.0, 8.0):
        noise = rng.normal(0, 1, (height, width, 3)).astype(np.float32)
        out += cv2.GaussianBlur(noise, (0, 0), sigma) * sigma
    out = (out - out.min()) / (out.max() - out.min()) * 255
    return out.astype(np.uint8)


def shifted_pair(dx, dy, seed=0):
    """(src, dst) with dst(x + dx, y + dy) = src(x, y), cut from one larger image."""
    big = textured(96 + 16, 128 + 16, seed)
    src = big[8 : 8 + 96, 8 : 8 + 128]
    dst = big[8 - dy : 8 - dy + 96, 8 - dx : 8 - dx + 128]
    return np.ascontiguousarray(src), np.ascontiguousarray(dst)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "data"
    synthesize(root, clips=1, val_clips=0, test_clips=0, frames=8, size=128, seed=2)
    return open_dataset(root, "train")[0]


@pytest.mark.parametrize(
    ("name", "kw", "tol"),
    [
        ("dis", {"preset": "medium"}, 0.05),
        ("dis", {"preset": "ultrafast"}, 0.25),
        ("dis", {"preset": "medium", "scale": 0.5}, 0.15),
        ("farneback", {}, 0.1),
    ],
)
def test_estimators_recover_a_known_translation(name, kw, tol):
    src, dst = shifted_pair(3, -2)
    flow = build(name, **kw)(src, dst)
    assert flow.shape == (96, 128, 2)
    assert flow.dtype == np.float32
    inner = flow[12:-12, 12:-12]
    assert np.median(np.abs(inner[..., 0] - 3)) < tol
    assert np.median(np.abs(inner[..., 1] + 2)) < tol


def test_dis_direction_follows_the_contract():
    # The point at p in src is at p + flow in dst, so warping dst back by the flow rebuilds src.
    src, dst = shifted_pair(4, 1, seed=3)
    flow = DisFlow()(src, dst)
    ys, xs = np.mgrid[0:96, 0:128].astype(np.float32)
    rebuilt = cv2.remap(dst, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR)
    inner = (slice(10, -10), slice(10, -10))
    error = np.abs(rebuilt[inner].astype(int) - src[inner].astype(int)).mean()
    assert error < 2.0
    assert np.abs(rebuilt[inner].astype(int) - dst[inner].astype(int)).mean() > 4 * error


def test_dis_accuracy_on_the_synthetic_world(synth):
    est = DisFlow("medium")
    errors = [
        endpoint_error(est.pair(synth, n, n - 1), synth.flow(n), synth.flow_valid(n))
        for n in synth.frames[1:]
    ]
    # Measured 0.10 px median EPE at 256x256 (docs/motion.md); a broken direction or scaling
    # gives several pixels.
    assert np.median(errors) < 0.3


def test_batch_path_equals_numpy_path_for_uint8_and_float_inputs():
    pairs = [shifted_pair(2, 1, seed=s) for s in (0, 1)]
    est = DisFlow("fast")
    src = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2)
    dst = torch.from_numpy(np.stack([p[1] for p in pairs])).permute(0, 3, 1, 2)
    out = est.batch(src, dst)
    assert out.shape == (2, 2, 96, 128)
    assert out.dtype == torch.float32
    for i, (a, b) in enumerate(pairs):
        np.testing.assert_array_equal(out[i].permute(1, 2, 0).numpy(), est(a, b))
    out_float = est.batch(src.float() / 255, dst.float() / 255)
    torch.testing.assert_close(out_float, out)


def test_bad_inputs_name_what_is_wrong():
    src, dst = shifted_pair(1, 1)
    est = DisFlow()
    with pytest.raises(ConfigError, match="dtype float32"):
        est(src.astype(np.float32), dst)
    with pytest.raises(ConfigError, match="differ in size"):
        est(src, dst[:50])
    with pytest.raises(ConfigError, match=r"\(H, W, 3\)"):
        est(src[..., 0], dst[..., 0])
    with pytest.raises(ConfigError, match=r"\(B, 3, H, W\)"):
        est.batch(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


def test_build_rejects_unknown_names_and_options():
    with pytest.raises(ConfigError, match="did you mean 'dis'"):
        build("diss")
    with pytest.raises(ConfigError, match=r"no option 'presett'.*preset"):
        build("dis", presett="fast")
    with pytest.raises(ConfigError, match="unknown DIS preset 'slow'"):
        build("dis", preset="slow")
    with pytest.raises(ConfigError, match="scale must be in"):
        build("farneback", scale=2)


def test_settings_key_changes_with_every_setting():
    keys = {
        DisFlow("medium").key,
        DisFlow("fast").key,
        DisFlow("medium", scale=0.5).key,
        FarnebackFlow().key,
        FarnebackFlow(winsize=21).key,
    }
    assert len(keys) == 5
    assert DisFlow("medium").key == DisFlow("medium").key


def test_ground_truth_flow_reads_the_dataset(synth):
    est = build("gt")
    np.testing.assert_array_equal(est.pair(synth, 3, 2), synth.flow(3))
    with pytest.raises(ConfigError, match="stored from frame n to n-1 only"):
        est.pair(synth, 2, 3)
    with pytest.raises(DataError, match="no ground-truth flow for frame 0"):
        est.pair(synth, 0, -1)
    with pytest.raises(ConfigError, match="cannot compute flow from two images"):
        est(synth.image(1), synth.image(0))


class CountingFlow(DisFlow):
    def __init__(self):
        super().__init__("fast")
        self.calls = 0

    def pair(self, clip, a, b):
        self.calls += 1
        return super().pair(clip, a, b)


def test_cache_computes_each_pair_once_and_stores_float16(synth, tmp_path):
    inner = CountingFlow()
    cache = FlowCache(inner, tmp_path / "cache")
    first = cache.pair(synth, 4, 3)
    second = cache.pair(synth, 4, 3)
    assert inner.calls == 1
    assert (cache.misses, cache.hits) == (1, 1)
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.float32
    exact = inner(synth.image(4), synth.image(3))
    np.testing.assert_allclose(first, exact, rtol=2e-3, atol=1e-3)
    path = cache.path(synth.id, 4, 3)
    assert path == tmp_path / "cache" / inner.key / synth.id / "000004-000003.npy"
    assert np.load(path).dtype == np.float16
    settings = json.loads((path.parent.parent / "settings.json").read_text())
    assert settings == {"name": "dis", "preset": "fast", "scale": 1.0}
    assert not list(path.parent.glob(".*tmp"))
    # Another setting is another key: nothing stale is read.
    other = FlowCache(DisFlow("medium"), tmp_path / "cache")
    assert other.path(synth.id, 4, 3) != path
    other.pair(synth, 4, 3)
    assert other.misses == 1


def test_build_with_cache_wraps_the_estimator(synth, tmp_path):
    est = build("dis", preset="ultrafast", cache=tmp_path / "c")
    assert isinstance(est, FlowCache)
    assert est.key == DisFlow("ultrafast").key
    est.pair(synth, 2, 1)
    assert est.path(synth.id, 2, 1).is_file()


def test_corrupt_cache_entry_is_a_clear_error(synth, tmp_path):
    cache = FlowCache(DisFlow("fast"), tmp_path)
    path = cache.path(synth.id, 2, 1)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a numpy file")
    with pytest.raises(DataError, match=r"000002-000001\.npy: not a readable"):
        cache.pair(synth, 2, 1)
    np.save(path, np.zeros((5, 5, 2), np.float16))
    with pytest.raises(DataError, match="delete the file to recompute"):
        cache.pair(synth, 2, 1)


def test_cached_ground_truth_is_exact(synth, tmp_path):
    cache = FlowCache(GroundTruthFlow(), tmp_path)
    np.testing.assert_allclose(cache.pair(synth, 5, 4), synth.flow(5), atol=0)
