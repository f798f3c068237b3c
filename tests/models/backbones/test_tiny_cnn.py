import pytest
import torch

from vidseg.errors import ConfigError
from vidseg.models import build_backbone


@pytest.mark.parametrize(
    ("name", "widths"),
    [
        ("tiny_cnn", (16, 32, 64, 128)),
        ("small_cnn", (32, 64, 128, 256)),
        ("medium_cnn", (48, 96, 192, 384)),
    ],
)
def test_levels_have_the_declared_channels_and_strides(name, widths):
    backbone = build_backbone(name).eval()
    assert backbone.channels == widths
    assert backbone.strides == (4, 8, 16, 32)
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 64, 96))
    assert [tuple(f.shape) for f in features] == [
        (2, c, 64 // s, 96 // s) for c, s in zip(widths, backbone.strides, strict=True)
    ]
    # ReLU outputs: non-negative and not all zero.
    assert all(f.min() >= 0 and f.max() > 0 for f in features)


def test_a_shift_by_the_total_stride_shifts_every_level_by_one_cell_per_stride():
    """Away from the zero-padded borders, shifting the input by 32 px shifts level i by 32/s_i."""
    torch.manual_seed(0)
    backbone = build_backbone("tiny_cnn").eval()
    x = torch.randn(1, 3, 128, 192)
    shifted = torch.roll(x, shifts=32, dims=-1)
    with torch.no_grad():
        a, b = backbone(x), backbone(shifted)
    for level, (fa, fb) in enumerate(zip(a[:2], b[:2], strict=True)):
        step = 32 // backbone.strides[level]
        width = fa.shape[-1]
        margin = 6 if level == 0 else 4  # beyond the receptive field of the borders
        interior_a = fa[..., margin : width - step - margin]
        interior_b = fb[..., margin + step : width - margin]
        torch.testing.assert_close(interior_a, interior_b, rtol=1e-5, atol=1e-5)


def test_input_size_must_be_a_multiple_of_32():
    with pytest.raises(ValueError, match="input size 70x96 is not a multiple of 32"):
        build_backbone("tiny_cnn")(torch.zeros(1, 3, 70, 96))
    with pytest.raises(ValueError, match=r"expected a \(B, 3, H, W\) tensor, got \(1, 1, 64, 64\)"):
        build_backbone("tiny_cnn")(torch.zeros(1, 1, 64, 64))


def test_drop_path_is_refused_for_plain_cnns():
    with pytest.raises(ConfigError, match=r"drop_path=0\.1: tiny_cnn has no residual branches"):
        build_backbone("tiny_cnn", drop_path=0.1)
