import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vidseg.errors import ConfigError
from vidseg.models import build_backbone


def _randomize(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def hf_convnext_tiny(tmp_path_factory):
    """transformers' ConvNextModel (the trunk of an image classifier) and ConvNextBackbone
    (with per-stage norms, as inside UperNet), ConvNeXt-T, saved with save_pretrained."""
    from transformers import ConvNextBackbone, ConvNextConfig, ConvNextModel

    root = tmp_path_factory.mktemp("convnext")
    config = ConvNextConfig(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768])
    trunk = _randomize(ConvNextModel(config))
    trunk.save_pretrained(root / "model")
    backbone_config = ConvNextConfig(
        depths=[3, 3, 9, 3],
        hidden_sizes=[96, 192, 384, 768],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    backbone = _randomize(ConvNextBackbone(backbone_config))
    backbone.save_pretrained(root / "backbone")
    return root, trunk, backbone


def _write_hf_folder(folder, tensors):
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "x"}))


def test_forward_gives_the_normed_stage_outputs():
    backbone = build_backbone("convnext_tiny").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = backbone(x)
        reference = backbone.model(pixel_values=x).feature_maps
    assert [tuple(f.shape) for f in features] == [
        (1, 96, 16, 16),
        (1, 192, 8, 8),
        (1, 384, 4, 4),
        (1, 768, 2, 2),
    ]
    for f, ref in zip(features, reference, strict=True):
        torch.testing.assert_close(f, ref, rtol=0, atol=0)


def test_image_classifier_checkpoint_loads_and_keeps_fresh_stage_norms(tmp_path, hf_convnext_tiny):
    root, trunk, _ = hf_convnext_tiny
    tensors = {
        "convnext." + k: v for k, v in load_file(str(root / "model" / "model.safetensors")).items()
    }
    tensors["classifier.weight"] = torch.zeros(1000, 768)
    tensors["classifier.bias"] = torch.zeros(1000)
    _write_hf_folder(tmp_path / "convnext-tiny-224", tensors)
    loaded = build_backbone("convnext_tiny", weights=str(tmp_path / "convnext-tiny-224"))
    ref = trunk.state_dict()
    ours = loaded.model.state_dict()
    compared = [k for k in ref if not k.startswith("layernorm.")]
    assert len(compared) == len(ref) - 2
    for key in compared:
        assert torch.equal(ours[key], ref[key]), key
    for stage in ("stage1", "stage2", "stage3", "stage4"):
        norm = loaded.model.hidden_states_norms[stage]
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))


def test_upernet_checkpoint_loads_the_backbone_with_its_stage_norms(tmp_path, hf_convnext_tiny):
    root, _, backbone = hf_convnext_tiny
    tensors = {
        "backbone." + k: v
        for k, v in load_file(str(root / "backbone" / "model.safetensors")).items()
    }
    tensors["decode_head.classifier.weight"] = torch.zeros(150, 512, 1, 1)
    tensors["auxiliary_head.classifier.weight"] = torch.zeros(150, 256, 1, 1)
    _write_hf_folder(tmp_path / "upernet", tensors)
    loaded = build_backbone("convnext_tiny", weights=str(tmp_path / "upernet"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = loaded.eval()(x)
        ref = backbone.eval()(pixel_values=x).feature_maps
    for f, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(f, r)

    del tensors["backbone.hidden_states_norms.stage2.weight"]
    _write_hf_folder(tmp_path / "broken", tensors)
    with pytest.raises(
        ConfigError, match=r"missing .*'backbone\.hidden_states_norms\.stage2\.weight'"
    ):
        build_backbone("convnext_tiny", weights=str(tmp_path / "broken"))


def test_wrong_variant_is_reported(hf_convnext_tiny):
    with pytest.raises(
        ConfigError, match=r"depths 3,3,9,3 \(convnext_tiny\), but the model is convnext_small"
    ):
        build_backbone("convnext_small", weights=str(hf_convnext_tiny[0] / "backbone"))
