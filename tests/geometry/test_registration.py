import itertools
import json
import logging
import pickle

import cv2
import numpy as np
import pytest
import torch

from vidseg.data import open_dataset, synthesize
from vidseg.data.synth import SynthConfig, iter_clip
from vidseg.errors import ConfigError, DataError
from vidseg.geometry.homography import apply_homography, rescale_homography, resize_matrix
from vidseg.geometry.registration import (
    FrameFeatures,
    HomographyCache,
    Registrar,
    RegistrationConfig,
    RegistrationInfo,
    check_homography,
    corner_error,
    estimate_homography,
)

SIZE = (256, 256)
LOGGER = "vidseg.geometry.registration"


class MemoryClip:
    """A dataset clip held in memory (frames and ground-truth homographies)."""

    def __init__(self, clip_id, frames):
        self.id = clip_id
        self.images = [f.image for f in frames]
        self.homographies = [f.homography for f in frames]
        self.reads = 0

    def image(self, n):
        self.reads += 1
        return self.images[n]

    def homography(self, n):
        return self.homographies[n] if n >= 1 else None


@pytest.fixture(scope="module")
def clips():
    """Two synthetic clips at 256x256 with the default degradations: 24 frame pairs."""
    cfg = SynthConfig(frames=13, size=SIZE)
    return [MemoryClip(f"train-{i:03d}", list(iter_clip(cfg, "train", i, False))) for i in (0, 1)]


@pytest.fixture(scope="module")
def pairs(clips):
    return [
        (c.images[n - 1], c.images[n], c.homographies[n])
        for c in clips
        for n in range(1, len(c.images))
    ]


@pytest.fixture(scope="module")
def clean_frame():
    cfg = SynthConfig(frames=2, size=SIZE, degrade=0)
    return next(iter_clip(cfg, "train", 3, with_flow=False)).image


def similarity(zoom, degrees, shift, size=SIZE):
    """Zoom and rotation about the frame centre, then a shift: a 3x3 homography."""
    centre = np.array([(size[1] - 1) / 2, (size[0] - 1) / 2])
    a = np.radians(degrees)
    rot = zoom * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    h = np.eye(3)
    h[:2, :2] = rot
    h[:2, 2] = centre - rot @ centre + np.asarray(shift)
    return h


def errors(registrar, pairs):
    """Corner errors (px) of ``registrar`` on ``pairs``, and the infos."""
    results = [registrar(a, b) for a, b, _ in pairs]
    err = [corner_error(h, g, SIZE) for (h, _), (_, _, g) in zip(results, pairs, strict=True)]
    return np.array(err), [info for _, info in results]


# -- accuracy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{}, {"estimator": "ransac"}, {"method": "sift"}, {"method": "klt"}],
    ids=["orb-magsac", "orb-ransac", "sift", "klt"],
)
def test_estimators_recover_the_synthetic_ground_truth(pairs, options):
    registrar = Registrar(**options)
    assert registrar.config.scale == 0.5  # the default reduced resolution
    err, infos = errors(registrar, pairs)
    identity = np.array([corner_error(np.eye(3), g, SIZE) for _, _, g in pairs])
    assert len(pairs) >= 20
    # The camera moves: doing nothing is off by about a pixel or more.
    assert np.median(identity) > 1.0
    assert np.median(err) <= 0.5  # the acceptance limit
    # Measured 0.08-0.10 px (90th percentile 0.14-0.18 px): these catch a regression early.
    assert np.median(err) <= 0.2
    assert np.percentile(err, 90) <= 0.4
    assert all(i.ok for i in infos)
    assert min(i.inliers for i in infos) >= registrar.config.min_inliers
    assert registrar.stats.pairs == len(pairs)
    assert registrar.stats.fallback_count == 0


def test_refinement_is_what_makes_reduced_resolution_accurate(pairs):
    coarse, _ = errors(Registrar(refine="none"), pairs)
    fine, _ = errors(Registrar(), pairs)
    # Features at half resolution sit on a 2-pixel grid of the full frame.
    assert np.median(coarse) > 0.4
    assert np.median(fine) < 0.5 * np.median(coarse)


@pytest.mark.parametrize(("zoom", "degrees"), [(1.25, 0.0), (0.8, -10.0)])
def test_reduced_resolution_fit_is_rescaled_with_pixel_centres(monkeypatch, zoom, degrees):
    """Known answer: features whose reduced-resolution positions are related exactly by the
    reduced-resolution version of ``truth`` must give back ``truth`` at full resolution."""
    truth = similarity(zoom, degrees, (3.2, -2.7))
    small = (128, 128)
    h_small = rescale_homography(truth, resize_matrix(SIZE, small))
    rng = np.random.default_rng(0)
    points = rng.uniform(20, 108, (200, 2)).astype(np.float32)
    descriptors = rng.integers(0, 256, (200, 32), dtype=np.uint8)
    moved = apply_homography(h_small, points).astype(np.float32)
    prev_image, cur_image = np.zeros((*SIZE, 3), np.uint8), np.ones((*SIZE, 3), np.uint8)
    features = {
        id(prev_image): FrameFeatures(None, SIZE, small, points, descriptors),
        id(cur_image): FrameFeatures(None, SIZE, small, moved, descriptors),
    }
    monkeypatch.setattr(Registrar, "_features", lambda self, image: features[id(image)])
    h, info = Registrar(refine="none", min_spread=0.0)(prev_image, cur_image)
    assert info.inliers == 200
    assert corner_error(h, truth, SIZE) < 0.01  # float32 point coordinates
    # Rescaling by diag(2, 2, 1) alone, ignoring the half-pixel offsets, is measurably off.
    naive = np.diag([2.0, 2.0, 1.0]) @ h_small @ np.diag([0.5, 0.5, 1.0])
    assert corner_error(naive, truth, SIZE) > 0.1


@pytest.mark.parametrize(("zoom", "degrees"), [(1.25, 0.0), (1.0, 8.0), (0.8, -6.0)])
def test_orb_with_refinement_is_exact_under_zoom_and_rotation(clean_frame, zoom, degrees):
    truth = similarity(zoom, degrees, (2.5, -1.25))
    cur = cv2.warpPerspective(clean_frame, truth, SIZE[::-1], flags=cv2.INTER_LINEAR)
    h, info = estimate_homography(clean_frame, cur)
    assert info.ok
    assert info.refined >= info.inliers
    assert corner_error(h, truth, SIZE) < 0.2


def test_klt_tracks_moderate_rotation_and_zoom_precisely(clean_frame):
    # Consecutive frames: a few per cent of zoom and a few degrees at most (much larger changes
    # between two frames are for orb, which matches instead of tracking).
    truth = similarity(1.05, 2.0, (2.5, -1.25))
    cur = cv2.warpPerspective(clean_frame, truth, SIZE[::-1], flags=cv2.INTER_LINEAR)
    h, info = estimate_homography(clean_frame, cur, method="klt")
    assert info.quality == "good"
    assert info.keypoints[0] == RegistrationConfig().klt_corners
    assert info.inliers >= 0.8 * info.matches
    assert corner_error(h, truth, SIZE) < 0.2


# -- fallbacks and checks ------------------------------------------------------------------------


def test_textureless_pair_falls_back_to_identity_loudly(caplog):
    flat = np.full((*SIZE, 3), 90, np.uint8)
    registrar = Registrar()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        h, info = registrar(flat, flat.copy())
    np.testing.assert_array_equal(h, np.eye(3))
    assert info.fallback
    assert not info.ok
    assert info.quality == "fallback"
    assert info.reason == "no_features"
    assert "0 features" in info.detail
    assert registrar.stats.fallbacks == {"no_features": 1}
    assert "1 fallbacks (no_features 1)" in registrar.stats.summary()
    assert len(caplog.records) == 1
    assert "fell back to the identity" in caplog.text
    assert "no_features" in caplog.text


def test_klt_falls_back_on_blank_frames(clips, caplog):
    flat = np.full((*SIZE, 3), 90, np.uint8)
    textured = clips[0].images[0]
    registrar = Registrar(method="klt")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        # Nothing to track on a blank previous frame.
        h, info = registrar(flat, textured)
        np.testing.assert_array_equal(h, np.eye(3))
        assert info.fallback
        assert info.reason == "no_features"
        assert "0 corners in the previous frame" in info.detail
        # Corners of a textured frame have nothing to lock onto in a blank one: no track comes
        # back to where it started.
        h, info = registrar(textured, flat)
    np.testing.assert_array_equal(h, np.eye(3))
    assert info.fallback
    assert info.reason == "few_matches"
    assert info.keypoints[0] == registrar.config.klt_corners
    assert registrar.stats.fallbacks == {"no_features": 1, "few_matches": 1}
    assert caplog.text.count("fell back to the identity") == 2


@pytest.mark.parametrize("method", ["orb", "klt"])
def test_unrelated_frames_fall_back(clips, method):
    registrar = Registrar(method=method)
    for n in (2, 6, 10):
        h, info = registrar(clips[0].images[n], clips[1].images[n])
        np.testing.assert_array_equal(h, np.eye(3))
        assert info.reason in ("few_matches", "few_inliers"), info
    assert registrar.stats.fallback_count == 3
    assert registrar.stats.pairs == 3


def test_fallback_warnings_are_rate_limited_but_counted(caplog):
    flat = np.zeros((96, 96, 3), np.uint8)
    registrar = Registrar()
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        for _ in range(8):
            registrar(flat, flat)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5
    assert "one in 100" in warnings[-1].getMessage()
    assert "8 fallbacks in 8 pairs" in caplog.records[-1].getMessage()
    assert registrar.stats.fallback_count == 8


def test_check_homography_flags_degenerate_and_implausible_matrices(pairs):
    assert check_homography(np.eye(3), SIZE) is None
    for _, _, g in pairs:  # real camera motion passes
        assert check_homography(g, SIZE) is None
    stretch = np.diag([1.6, 1.0, 1.0])
    stretch[0, 2] = -0.6 * 127.5  # about the frame centre
    cases = {
        "corner moves": (np.array([[1, 0, 100.0], [0, 1, 0], [0, 0, 1]]), "implausible"),
        "zoom": (similarity(1.6, 0, (0, 0)), "implausible"),
        "anisotropy": (stretch, "implausible"),
        "mirrors": (np.array([[-1, 0, 255.0], [0, 1, 0], [0, 0, 1]]), "degenerate"),
        "infinity": (np.array([[1, 0, 0], [0, 1, 0], [-0.005, 0, 1.0]]), "degenerate"),
        "non-finite": (np.full((3, 3), np.nan), "degenerate"),
    }
    # Only the shift limit is loose, so that zoom and stretch are what each case trips on.
    config = RegistrationConfig(max_shift=0.4)
    for words, (h, reason) in cases.items():
        result = check_homography(h, SIZE, config if words != "corner moves" else None)
        assert result is not None, (words, result)
        assert result[0] == reason, (words, result)
        assert words in result[1]
    # Limits come from the settings.
    loose = RegistrationConfig(max_shift=0.4, max_scale=1.7, max_anisotropy=1.7)
    assert check_homography(similarity(1.6, 0, (0, 0)), SIZE, loose) is None
    assert check_homography(stretch, SIZE, loose) is None


def test_implausible_or_concentrated_estimates_fall_back(pairs):
    prev, cur, _ = pairs[3]
    h, info = Registrar(max_shift=1e-4)(prev, cur)
    assert info.fallback
    assert info.reason == "implausible"
    assert "of the diagonal" in info.detail
    np.testing.assert_array_equal(h, np.eye(3))
    h, info = Registrar(min_spread=0.95)(prev, cur)
    assert info.fallback
    assert info.reason == "degenerate"
    assert "of the frame" in info.detail


def test_weak_results_are_flagged_but_kept(pairs):
    prev, cur, truth = pairs[0]
    inliers = Registrar()(prev, cur)[1].inliers
    # Enough inliers to pass, fewer than twice the minimum.
    registrar = Registrar(min_inliers=inliers // 2 + 1)
    h, info = registrar(prev, cur)
    assert info.inliers == inliers
    if info.fallback:
        pytest.fail(f"expected a weak result, got a fallback: {info}")
    assert info.quality == "weak"
    assert info.ok
    assert info.reason == "low_support"
    assert corner_error(h, truth, SIZE) < 1.0
    assert registrar.stats.weak == 1


# -- methods, settings and inputs ----------------------------------------------------------------


def test_identity_and_gt_methods(pairs):
    prev, cur, truth = pairs[0]
    h, info = estimate_homography(prev, cur, method="identity")
    np.testing.assert_array_equal(h, np.eye(3))
    assert info.quality == "assumed"
    assert info.ok
    h, info = estimate_homography(prev, cur, method="gt", gt=2.0 * truth)
    np.testing.assert_allclose(h, truth, atol=1e-12)
    assert h[2, 2] == 1.0
    assert info.quality == "exact"
    with pytest.raises(ConfigError, match="needs the ground truth"):
        estimate_homography(prev, cur, method="gt")


def test_registrar_pair_reads_dataset_clips(tmp_path):
    root = synthesize(tmp_path / "ds", clips=3, frames=4, size=128, flow=False, show_progress=False)
    clip = open_dataset(root, "train")[0]
    h, info = Registrar(method="gt").pair(clip, 2)
    np.testing.assert_allclose(h, clip.homography(2))
    assert info.quality == "exact"
    h_orb, info = Registrar().pair(clip, 2)
    assert info.ok
    assert corner_error(h_orb, clip.homography(2), (128, 128)) < 0.5
    with pytest.raises(DataError, match="no frame -1"):
        Registrar().pair(clip, 0)
    with pytest.raises(DataError, match="no ground-truth homography for frame 0"):
        Registrar(method="gt").pair(clip, 0)


def test_unknown_names_and_bad_values_are_config_errors(pairs):
    prev, cur, _ = pairs[0]
    with pytest.raises(ConfigError, match="unknown registration method 'orbb'; did you mean 'orb'"):
        estimate_homography(prev, cur, method="orbb")
    with pytest.raises(ConfigError, match="did you mean 'magsac'"):
        Registrar(estimator="magsak")
    unknown_option = r"unknown registration option 'treshold'; did you mean 'threshold'"
    with pytest.raises(ConfigError, match=unknown_option):
        estimate_homography(prev, cur, treshold=2.0)
    with pytest.raises(ConfigError, match=r"scale must be in \(0, 1\], got 0.0"):
        Registrar(scale=0)
    with pytest.raises(ConfigError, match="max_features must be an integer"):
        Registrar(max_features=1.5)
    with pytest.raises(ConfigError, match="refine_window must be odd"):
        Registrar(refine_window=20)
    with pytest.raises(ConfigError, match="klt_window must be odd"):
        Registrar(method="klt", klt_window=10)
    with pytest.raises(ConfigError, match="differ in size"):
        estimate_homography(prev, cur[:128])
    with pytest.raises(ConfigError, match="expected uint8"):
        estimate_homography(prev.astype(np.float32), cur)


def test_estimate_homography_returns_a_normalised_float64_matrix(pairs):
    prev, cur, _ = pairs[5]
    h, info = estimate_homography(prev, cur, method="sift", scale=1.0)
    assert h.dtype == np.float64
    assert h.shape == (3, 3)
    assert h[2, 2] == 1.0
    assert info.method == "sift"
    assert info.inliers >= 15
    assert 0 < info.inlier_ratio <= 1
    assert info.time_ms > 0
    record = info.to_dict()
    assert record["fallback"] is False
    assert record["inliers"] == info.inliers
    assert RegistrationInfo.from_dict(json.loads(json.dumps(record))) == info


# -- batches and streams -------------------------------------------------------------------------


def test_batch_equals_per_pair_calls_for_numpy_and_torch(pairs):
    prev = np.stack([a for a, _, _ in pairs[:4]])
    cur = np.stack([b for _, b, _ in pairs[:4]])
    registrar = Registrar()
    expected = np.stack([registrar(a, b)[0] for a, b in zip(prev, cur, strict=True)])
    hs, infos = registrar.batch(prev, cur)
    assert hs.shape == (4, 3, 3)
    assert hs.dtype == np.float64
    np.testing.assert_array_equal(hs, expected)
    assert len(infos) == 4
    assert all(i.ok for i in infos)
    as_tensor = torch.from_numpy(prev).permute(0, 3, 1, 2)
    cur_tensor = torch.from_numpy(cur).permute(0, 3, 1, 2)
    for a, b in ((as_tensor, cur_tensor), (as_tensor.float() / 255, cur_tensor.float() / 255)):
        out, _ = registrar.batch(a, b)
        assert isinstance(out, torch.Tensor)
        assert out.dtype == torch.float64
        np.testing.assert_array_equal(out.numpy(), expected)
    gts = np.stack([g for _, _, g in pairs[:4]])
    out, infos = Registrar(method="gt").batch(as_tensor, cur_tensor, gt=torch.from_numpy(gts))
    np.testing.assert_allclose(out.numpy(), gts / gts[:, 2:3, 2:3])
    with pytest.raises(ConfigError, match=r"expected a \(B, 3, H, W\) tensor"):
        registrar.batch(as_tensor[0], cur_tensor[0])


@pytest.mark.parametrize("method", ["orb", "klt"])
def test_track_detects_each_frame_once_and_matches_pairwise_calls(clips, monkeypatch, method):
    frames = clips[0].images[:6]
    registrar = Registrar(method=method)
    expected = [registrar(a, b)[0] for a, b in itertools.pairwise(frames)]
    calls = []
    original = Registrar._features
    monkeypatch.setattr(
        Registrar, "_features", lambda self, image: calls.append(1) or original(self, image)
    )
    tracked = list(registrar.track(iter(frames)))
    assert len(tracked) == 5
    assert len(calls) == 6
    for (h, info), h_pair in zip(tracked, expected, strict=True):
        assert info.ok
        np.testing.assert_allclose(h, h_pair, atol=1e-12)


def test_advance_carries_a_stream_frame_by_frame(clips):
    frames = clips[1].images[:4]
    registrar = Registrar(method="klt")
    prev, result = registrar.advance(None, frames[0])
    assert result is None  # the first frame has nothing to be registered to
    for a, b in itertools.pairwise(frames):
        prev, result = registrar.advance(prev, b)
        assert result is not None
        np.testing.assert_array_equal(result[0], registrar(a, b)[0])
    assert registrar.stats.pairs == 6  # three from advance, three from the pairwise calls
    with pytest.raises(ConfigError, match="differ in size"):
        registrar.advance(prev, frames[0][:128])
    with pytest.raises(ConfigError, match="cannot track a stream"):
        Registrar(method="gt").advance(None, frames[0])


def test_registrar_pickles_for_dataloader_workers(pairs):
    registrar = Registrar(method="sift")
    clone = pickle.loads(pickle.dumps(registrar))
    prev, cur, _ = pairs[0]
    np.testing.assert_array_equal(clone(prev, cur)[0], registrar(prev, cur)[0])


# -- cache ---------------------------------------------------------------------------------------


def test_cache_serves_the_second_request_from_disk(clips, tmp_path, monkeypatch):
    clip = clips[0]
    first = Registrar(cache=tmp_path / "cache")
    h1, info1 = first.pair(clip, 3)
    path = first.cache.path(first.key, clip.id, 2, 3)
    assert path.is_file()
    assert (tmp_path / "cache" / first.key / "settings.json").is_file()

    estimates = []
    original = Registrar._estimate
    monkeypatch.setattr(
        Registrar,
        "_estimate",
        lambda self, *a: estimates.append(1) or original(self, *a),
    )
    reads = clip.reads
    second = Registrar(cache=HomographyCache(tmp_path / "cache"))
    h2, info2 = second.pair(clip, 3)
    assert estimates == []
    assert clip.reads == reads  # not even the frames were read
    np.testing.assert_array_equal(h2, h1)  # exact round trip of the float64 values
    assert info2.cached
    assert not info1.cached
    assert info2.inliers == info1.inliers
    assert info2.quality == info1.quality
    assert second.stats.cached == 1
    second.pair(clip, 4)
    assert estimates == [1]


def test_cache_key_follows_the_settings(clips, tmp_path):
    base = Registrar()
    assert Registrar(threshold=3.0).key != base.key
    assert Registrar(method="sift").key != base.key
    assert Registrar(scale=1).key == Registrar(scale=1.0).key  # int and float alike
    assert base.key.startswith("orb-")
    # The klt settings count for klt only, so adding them kept the keys of orb and sift caches.
    assert Registrar(klt_corners=64).key == base.key
    assert Registrar(method="klt", klt_corners=64).key != Registrar(method="klt").key
    a = Registrar(cache=tmp_path)
    b = Registrar(cache=tmp_path, ratio=0.7)
    a.pair(clips[0], 1)
    b.pair(clips[0], 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.key, b.key])


def test_corrupt_cache_entry_names_the_file(clips, tmp_path):
    registrar = Registrar(cache=tmp_path)
    registrar.pair(clips[0], 2)
    path = registrar.cache.path(registrar.key, clips[0].id, 1, 2)
    for content in ("{not json", json.dumps({"format": 1, "h": [[1, 0], [0, 1]], "info": {}})):
        path.write_text(content)
        with pytest.raises(DataError, match="corrupt homography cache entry") as excinfo:
            Registrar(cache=tmp_path).pair(clips[0], 2)
        assert str(path) in str(excinfo.value)


def test_cache_writes_are_atomic(clips, tmp_path, monkeypatch):
    registrar = Registrar(cache=tmp_path)
    for n in (1, 2, 3):
        registrar.pair(clips[1], n)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 4  # three entries and settings.json
    assert not [p for p in files if p.name.startswith(".")]

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        registrar.pair(clips[1], 4)
    files_after = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(files_after) == sorted(files)  # neither an entry nor a temporary file


def test_fallbacks_are_cached_and_still_counted(tmp_path, caplog):
    flat = MemoryClip.__new__(MemoryClip)
    flat.id, flat.reads = "flat/clip", 0
    flat.images = [np.full((*SIZE, 3), 7, np.uint8)] * 2
    flat.homographies = [np.eye(3)] * 2
    Registrar(cache=tmp_path).pair(flat, 1)
    registrar = Registrar(cache=tmp_path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        _, info = registrar.pair(flat, 1)
    assert info.cached
    assert info.fallback
    assert info.reason == "no_features"
    assert registrar.stats.fallbacks == {"no_features": 1}
    assert "clip 'flat/clip' frames 0->1" in caplog.text
    # A clip id is quoted into one folder name.
    assert registrar.cache.path(registrar.key, flat.id, 0, 1).parent.name == "flat%2Fclip"
