import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from vidseg.errors import ConfigError
from vidseg.models import (
    ModelConfig,
    Segmenter,
    build_backbone,
    build_head,
    build_segmenter,
    count_parameters,
)
from vidseg.models.backbones.base import IMAGENET_MEAN, IMAGENET_STD


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_segmenter(ModelConfig(backbone="tiny_cnn", head_channels=16), num_classes=5).eval()


def test_normalize_uses_the_backbone_mean_and_std_for_uint8_and_float(model):
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    as_uint8 = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    expected = (torch.tensor([0.0, 0.2, 1.0]).view(1, 3, 1, 1) - mean) / std
    torch.testing.assert_close(model.normalize(as_uint8), expected.expand(1, 3, 2, 2))
    torch.testing.assert_close(model.normalize(as_uint8.float() / 255), expected.expand(1, 3, 2, 2))
    torch.testing.assert_close(model.normalize(mean.expand(1, 3, 2, 2)), torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"uint8 .* or float .*, got torch\.int64"):
        model.normalize(torch.zeros(1, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"images must be \(B, 3, H, W\), got shape \(3, 4, 4\)"):
        model.normalize(torch.zeros(3, 4, 4))


@pytest.mark.parametrize("upsample", ["bilinear", "bicubic"])
def test_forward_on_a_divisible_input_is_backbone_head_upsample(upsample):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="tiny_cnn", head="segformer", head_channels=16, upsample=upsample)
    model = build_segmenter(cfg, num_classes=4).eval()
    images = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
    with torch.no_grad():
        x = (images.float() / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
            IMAGENET_STD
        ).view(1, 3, 1, 1)
        manual = F.interpolate(
            model.head(model.backbone(x)), size=(64, 96), mode=upsample, align_corners=False
        )
        logits = model(images)
    assert logits.shape == (2, 4, 64, 96)
    torch.testing.assert_close(logits, manual, rtol=1e-5, atol=1e-5)
    assert model.decode(model.encode(images)).shape == (2, 4, 16, 24)  # stride 4


def test_non_divisible_input_equals_the_crop_of_a_mean_padded_divisible_input(model):
    """Padding happens after normalisation with zeros, i.e. with the mean colour: running the
    model on the image placed top-left in a mean-coloured 96x96 canvas and cropping must give
    exactly the logits of the 70x90 image itself (nothing beyond the image leaks in)."""
    torch.manual_seed(1)
    image = torch.rand(2, 3, 70, 90)
    canvas = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).repeat(2, 1, 96, 96)
    canvas[..., :70, :90] = image
    with torch.no_grad():
        logits = model(image)
        reference = model(canvas)[..., :70, :90]
        # The same image in a canvas of a different colour gives different logits near the
        # border: the comparison above is sensitive to what the padding holds.
        other = canvas.clone()
        other[..., 70:, :] = 1.0
        other[..., :, 90:] = 1.0
        changed = model(other)[..., :70, :90]
    assert logits.shape == (2, 5, 70, 90)
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)
    assert (changed - reference).abs().max() > 1e-3


def test_encoder_channels_and_parameter_counting():
    model = build_segmenter(ModelConfig(backbone="small_cnn", head_channels=8), num_classes=3)
    assert model.encoder_channels == (32, 64, 128, 256)
    total = count_parameters(model)
    head = count_parameters(model.head)
    assert total == count_parameters(model.backbone) + head
    assert total == sum(
        p.numel() for p in model.state_dict().values() if p.is_floating_point()
    ) - sum(
        m.running_mean.numel() * 2 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )
    model.backbone.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == head


def test_segmenter_state_dict_holds_no_normalisation_buffers(model):
    assert not any(k in ("mean", "std") for k in model.state_dict())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"backbone": "tiny_cn"},
            "model.backbone: unknown backbone 'tiny_cn'; did you mean 'tiny_cnn'",
        ),
        ({"head": "uper"}, "model.head: unknown head 'uper'; did you mean 'upernet'"),
        ({"head_channels": 0}, "model.head_channels must be >= 1, got 0"),
        ({"dropout": 1.0}, r"model.dropout must be in \[0, 1\), got 1.0"),
        ({"drop_path": -0.5}, r"model.drop_path must be in \[0, 1\), got -0.5"),
        ({"upsample": "nearest"}, "model.upsample must be one of bilinear, bicubic; got 'nearest'"),
    ],
)
def test_bad_model_config_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**override)
    cfg = ModelConfig()
    for key, value in override.items():
        setattr(cfg, key, value)  # as a later assignment or merge could leave it
    with pytest.raises(ConfigError, match=message):
        build_segmenter(cfg, num_classes=3)


def test_bad_weights_and_num_classes_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"weights 'missing/w\.pt': no such file"):
        build_segmenter(ModelConfig(weights="missing/w.pt"), num_classes=3)
    with pytest.raises(ConfigError, match="num_classes must be >= 1, got 0"):
        build_segmenter(ModelConfig(), num_classes=0)
    with pytest.raises(ConfigError, match="upsample must be one of bilinear, bicubic; got 'area'"):
        Segmenter(
            build_backbone("tiny_cnn"), build_head("upernet", (16, 32, 64, 128), 3, 8), 3, "area"
        )


def test_model_config_works_as_an_omegaconf_structured_config():
    from omegaconf import OmegaConf

    base = OmegaConf.structured(ModelConfig)
    merged = OmegaConf.merge(
        base, OmegaConf.from_dotlist(["head=segformer", "weights=/w.pt", "dropout=0.2"])
    )
    cfg = OmegaConf.to_object(merged)
    assert cfg == ModelConfig(head="segformer", weights="/w.pt", dropout=0.2)
    with pytest.raises(ConfigError, match=r"model\.head_channels must be >= 1, got -1"):
        OmegaConf.to_object(OmegaConf.merge(base, {"head_channels": -1}))


def test_training_step_reduces_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = build_segmenter(
        ModelConfig(backbone="tiny_cnn", head_channels=16, dropout=0.0), 3
    ).train()
    # 8x8-pixel blocks of random colour, labelled by their dominant channel.
    blocks = torch.rand(4, 3, 4, 4)
    images = (F.interpolate(blocks, scale_factor=8, mode="nearest") * 255).to(torch.uint8)
    labels = F.interpolate(blocks, scale_factor=8, mode="nearest").argmax(dim=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_importing_vidseg_models_does_not_import_transformers():
    code = "import sys, vidseg.models; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
