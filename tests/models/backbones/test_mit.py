import json

import pytest
import torch
from safetensors.torch import save_file

from vidseg.errors import ConfigError
from vidseg.models import build_backbone


@pytest.fixture(scope="module")
def hf_mit_b0(tmp_path_factory):
    """A randomly initialised transformers SegformerModel (MiT-b0) saved with save_pretrained."""
    from transformers import SegformerConfig, SegformerModel

    torch.manual_seed(0)
    model = SegformerModel(SegformerConfig())  # the defaults are MiT-b0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    folder = tmp_path_factory.mktemp("mit") / "segformer_model"
    model.save_pretrained(folder)
    return folder, model


def _write_hf_folder(folder, tensors, architecture):
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"architectures": [architecture]}))


def _saved_tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_forward_gives_the_four_stage_outputs():
    backbone = build_backbone("mit_b0").eval()
    assert backbone.channels == (32, 64, 160, 256)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        features = backbone(x)
        reference = backbone.model(pixel_values=x, output_hidden_states=True).hidden_states
    assert [tuple(f.shape) for f in features] == [
        (1, 32, 16, 24),
        (1, 64, 8, 12),
        (1, 160, 4, 6),
        (1, 256, 2, 3),
    ]
    for f, ref in zip(features, reference, strict=True):
        torch.testing.assert_close(f, ref, rtol=0, atol=0)


def test_image_classifier_checkpoint_loads_the_encoder(tmp_path, hf_mit_b0):
    folder, reference = hf_mit_b0
    tensors = {"segformer." + k: v for k, v in _saved_tensors(folder).items()}
    tensors["classifier.weight"] = torch.zeros(1000, 256)
    tensors["classifier.bias"] = torch.zeros(1000)
    _write_hf_folder(tmp_path / "mit-b0", tensors, "SegformerForImageClassification")
    loaded = build_backbone("mit_b0", weights=str(tmp_path / "mit-b0"))
    # transformers' own loader of the same files is the reference.
    ours, ref = loaded.model.state_dict(), reference.state_dict()
    assert ours.keys() == ref.keys()
    for key in ref:
        assert torch.equal(ours[key], ref[key]), key


def test_semantic_segmentation_checkpoint_drops_the_decode_head(tmp_path, hf_mit_b0):
    folder, reference = hf_mit_b0
    tensors = {"segformer." + k: v for k, v in _saved_tensors(folder).items()}
    tensors["decode_head.linear_c.0.proj.weight"] = torch.zeros(256, 32)
    tensors["decode_head.classifier.weight"] = torch.zeros(150, 256, 1, 1)
    _write_hf_folder(tmp_path / "seg", tensors, "SegformerForSemanticSegmentation")
    loaded = build_backbone("mit_b0", weights=str(tmp_path / "seg"))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ours = loaded.eval()(x)
        ref = reference.eval()(pixel_values=x, output_hidden_states=True).hidden_states
    for f, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(f, r)


def test_own_state_dict_round_trips(tmp_path, hf_mit_b0):
    source = build_backbone("mit_b0", weights=str(hf_mit_b0[0]))
    save_file(source.state_dict(), str(tmp_path / "own.safetensors"))
    loaded = build_backbone("mit_b0", weights=str(tmp_path / "own.safetensors"))
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_missing_and_unexpected_keys_are_named_in_checkpoint_naming(tmp_path, hf_mit_b0):
    tensors = {"segformer." + k: v for k, v in _saved_tensors(hf_mit_b0[0]).items()}
    del tensors["segformer.encoder.layer_norm.3.weight"]
    _write_hf_folder(tmp_path / "missing", tensors, "SegformerForImageClassification")
    with pytest.raises(ConfigError, match=r"missing .*'segformer\.encoder\.layer_norm\.3\.weight'"):
        build_backbone("mit_b0", weights=str(tmp_path / "missing"))
    tensors["segformer.encoder.layer_norm.3.weight"] = torch.ones(256)
    tensors["segformer.encoder.block.0.0.attention.self.extra.weight"] = torch.ones(2)
    _write_hf_folder(tmp_path / "extra", tensors, "SegformerForImageClassification")
    with pytest.raises(
        ConfigError,
        match=r"unexpected .*'segformer\.encoder\.block\.0\.0\.attention\.self\.extra\.weight'",
    ):
        build_backbone("mit_b0", weights=str(tmp_path / "extra"))


def test_wrong_variant_is_reported(hf_mit_b0):
    with pytest.raises(
        ConfigError,
        match=r"widths 32,64,160,256 and depths 2,2,2,2 \(mit_b0\), but the model is mit_b1",
    ):
        build_backbone("mit_b1", weights=str(hf_mit_b0[0]))
