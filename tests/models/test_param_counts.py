"""Parameter counts against published figures; models are built on the meta device (no memory)."""

import pytest
import torch

from vidseg.models import ModelConfig, build_backbone, build_segmenter, count_parameters
from vidseg.models.backbones.hiera import HIERA_SPECS


def _count(backbone, head, channels, num_classes=8):
    with torch.device("meta"):
        model = build_segmenter(
            ModelConfig(backbone=backbone, head=head, head_channels=channels), num_classes
        )
    return count_parameters(model.backbone), count_parameters(model)


@pytest.mark.parametrize(
    ("backbone", "channels", "trunk", "total"),
    [("hiera_small", 256, 33.95e6, 43.17e6), ("hiera_base_plus", 512, 68.68e6, 101.0e6)],
)
def test_hiera_upernet_matches_the_ssp_models(backbone, channels, trunk, total):
    # SSP's figures, computed from the layer shapes: Hiera-S + UPerNet-256 (student) and
    # Hiera-B+ + UPerNet-512 (teacher).
    n_trunk, n_total = _count(backbone, "upernet", channels)
    assert n_trunk == pytest.approx(trunk, rel=1e-3)
    assert n_total == pytest.approx(total, rel=0.01)


@pytest.mark.parametrize(
    ("backbone", "encoder"),
    # The SegFormer paper's encoder sizes (M): b0 3.4 (rounded up), b1 13.1, b2 24.2, b3 44.0,
    # b4 60.8, b5 81.4; ConvNeXt-T/S trunks are 28M/50M minus the ImageNet classifier (0.77M).
    [
        ("mit_b0", 3.32e6),
        ("mit_b1", 13.1e6),
        ("mit_b2", 24.2e6),
        ("mit_b3", 44.0e6),
        ("mit_b4", 60.8e6),
        ("mit_b5", 81.4e6),
        ("convnext_tiny", 27.8e6),
        ("convnext_small", 49.5e6),
        ("hiera_tiny", 26.85e6),
        ("hiera_large", 212.15e6),
    ],
)
def test_backbone_sizes(backbone, encoder):
    with torch.device("meta"):
        assert count_parameters(build_backbone(backbone)) == pytest.approx(encoder, rel=0.005)


def test_every_hiera_size_has_the_sam2_widths_and_global_blocks_inside_the_depth():
    for spec in HIERA_SPECS.values():
        assert spec.channels == tuple(spec.embed_dim * 2**i for i in range(4))
        assert max(spec.global_blocks) < sum(spec.blocks)
