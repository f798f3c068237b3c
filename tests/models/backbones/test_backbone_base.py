import pytest
import torch
from safetensors.torch import save_file

from vidseg.errors import ConfigError
from vidseg.models import BACKBONES, build_backbone
from vidseg.models.backbones.base import format_keys, read_checkpoint


def _randomized(backbone):
    """The backbone with every tensor (BN statistics included) set to distinct random values."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in backbone.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith("num_batches_tracked"):
                tensor.fill_(7)
    return backbone


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_unknown_backbone_names_the_value_the_closest_name_and_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown backbone 'hiera_smal'") as info:
        build_backbone("hiera_smal")
    message = str(info.value)
    assert "did you mean 'hiera_small'" in message
    assert all(name in message for name in BACKBONES)


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_drop_path_out_of_range_is_rejected(rate):
    with pytest.raises(ConfigError, match=f"drop_path must be in \\[0, 1\\), got {rate}"):
        build_backbone("tiny_cnn", drop_path=rate)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth"])
def test_own_state_dict_round_trips(tmp_path, suffix):
    source = _randomized(build_backbone("tiny_cnn"))
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(source.state_dict(), str(path))
    else:
        torch.save(source.state_dict(), path)
    _assert_same_state(build_backbone("tiny_cnn", weights=str(path)), source)


def test_lightning_style_state_dict_wrapper_is_unwrapped(tmp_path):
    source = _randomized(build_backbone("small_cnn"))
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, tmp_path / "w.ckpt")
    _assert_same_state(build_backbone("small_cnn", weights=str(tmp_path / "w.ckpt")), source)


def test_missing_key_is_named(tmp_path):
    state = build_backbone("tiny_cnn").state_dict()
    del state["stages.2.1.0.weight"]
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(
        ConfigError, match=r"w\.safetensors: 1 key\(s\) missing .*'stages\.2\.1\.0\.weight'"
    ):
        build_backbone("tiny_cnn", weights=str(tmp_path / "w.safetensors"))


def test_unexpected_key_is_named(tmp_path):
    state = build_backbone("tiny_cnn").state_dict()
    state["stages.9.weight"] = torch.zeros(3)
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(
        ConfigError, match=r"1 unexpected key\(s\) for tiny_cnn: 'stages\.9\.weight'"
    ):
        build_backbone("tiny_cnn", weights=str(tmp_path / "w.safetensors"))


def test_wrong_shape_is_named_with_both_shapes(tmp_path):
    state = build_backbone("small_cnn").state_dict()
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(
        ConfigError,
        match=r"'stem\.0\.0\.weight' is \(16, 3, 3, 3\), tiny_cnn expects \(8, 3, 3, 3\)",
    ):
        build_backbone("tiny_cnn", weights=str(tmp_path / "w.pt"))


def test_unrelated_checkpoint_is_recognised_as_such(tmp_path):
    save_file({"encoder.layer.0.weight": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(
        ConfigError, match=r"does not hold tiny_cnn weights: .*'encoder\.layer\.0\.weight'"
    ):
        build_backbone("tiny_cnn", weights=str(tmp_path / "w.safetensors"))
    (tmp_path / "bert").mkdir()
    save_file(
        {"encoder.layer.0.weight": torch.zeros(2)}, str(tmp_path / "bert" / "model.safetensors")
    )
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(
        ConfigError,
        match=r"does not hold tiny_cnn weights \(its config\.json says model_type 'bert'\)",
    ):
        build_backbone("tiny_cnn", weights=str(tmp_path / "bert"))


def test_bad_weight_locations_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"weights 'nowhere/w\.pt': no such file or folder"):
        read_checkpoint("nowhere/w.pt")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"w\.txt: unknown format"):
        read_checkpoint(str(tmp_path / "w.txt"))
    (tmp_path / "broken.pt").write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match=r"cannot read weights file .*broken\.pt"):
        read_checkpoint(str(tmp_path / "broken.pt"))
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ConfigError, match=r"list\.pt does not hold a state dict"):
        read_checkpoint(str(tmp_path / "list.pt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"empty holds no model\.safetensors"):
        read_checkpoint(str(tmp_path / "empty"))


def test_uncached_hub_id_asks_for_a_local_download():
    # conftest sets HF_HUB_OFFLINE=1: the lookup fails at once instead of reaching the network.
    with pytest.raises(ConfigError, match=r"vidseg-test/not-a-model.*huggingface-cli download"):
        read_checkpoint("vidseg-test/not-a-model")


def test_sharded_hf_folder_is_read_in_full(tmp_path):
    import json

    save_file({"a": torch.ones(2)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.zeros(3)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    index = {
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        }
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text('{"model_type": "x"}')
    ckpt = read_checkpoint(str(tmp_path))
    assert sorted(ckpt.tensors) == ["a", "b"]
    assert ckpt.config == {"model_type": "x"}
    assert torch.equal(ckpt.tensors["b"], torch.zeros(3))


def test_format_keys_bounds_the_list():
    assert format_keys(["a", "b"]) == "'a', 'b'"
    assert format_keys([str(i) for i in range(10)]) == "'0', '1', '2', '3' and 6 more"
