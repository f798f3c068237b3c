import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from vidseg.errors import ConfigError
from vidseg.models import build_backbone
from vidseg.models.backbones.hiera import StochasticDepth

TRUNK = "image_encoder.trunk."


def sam2_trunk_state(embed=96, blocks=(1, 2, 7, 2), window0=8, bkg=(7, 7), seed=0):
    """A fake original-SAM2 trunk, written from SAM2's Hiera structure and its module names.

    Block i: norm1 (input width), attn.qkv / attn.proj, norm2, mlp.layers.0/1 (ratio 4); the first
    block of stages 2-4 takes the previous width and has a shortcut ``proj``.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    state = {
        TRUNK + "patch_embed.proj.weight": rand(embed, 3, 7, 7),
        TRUNK + "patch_embed.proj.bias": rand(embed),
        TRUNK + "pos_embed": rand(1, embed, *bkg),
        TRUNK + "pos_embed_window": rand(1, embed, window0, window0),
    }
    index, dim = 0, embed
    for stage, count in enumerate(blocks):
        dim_out = embed * 2**stage
        for j in range(count):
            dim_in = dim if j == 0 else dim_out
            p = f"{TRUNK}blocks.{index}."
            shapes = {
                "norm1": [(dim_in,), (dim_in,)],
                "attn.qkv": [(3 * dim_out, dim_in), (3 * dim_out,)],
                "attn.proj": [(dim_out, dim_out), (dim_out,)],
                "norm2": [(dim_out,), (dim_out,)],
                "mlp.layers.0": [(4 * dim_out, dim_out), (4 * dim_out,)],
                "mlp.layers.1": [(dim_out, 4 * dim_out), (dim_out,)],
            }
            if dim_in != dim_out:
                shapes["proj"] = [(dim_out, dim_in), (dim_out,)]
            for module, (w, b) in shapes.items():
                state[f"{p}{module}.weight"] = rand(*w)
                state[f"{p}{module}.bias"] = rand(*b)
            index += 1
        dim = dim_out
    return state


def sam2_checkpoint(trunk):
    """The whole SAM2 checkpoint layout: trunk plus neck, SAM heads and memory modules."""
    model = dict(trunk)
    model["image_encoder.neck.convs.0.conv.weight"] = torch.zeros(256, 768, 1, 1)
    model["sam_mask_decoder.iou_token.weight"] = torch.zeros(1, 256)
    model["maskmem_tpos_enc"] = torch.zeros(7, 1, 1, 64)
    return {"model": model}


@pytest.fixture(scope="module")
def tiny_trunk():
    return sam2_trunk_state()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_trunk):
    path = tmp_path_factory.mktemp("sam2") / "sam2_hiera_tiny.pt"
    torch.save(sam2_checkpoint(tiny_trunk), path)
    return path


def test_forward_gives_the_stage_ends_as_nchw():
    backbone = build_backbone("hiera_tiny").eval()
    assert backbone.channels == (96, 192, 384, 768)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        features = backbone(x)
        reference = backbone.model(pixel_values=x).intermediate_hidden_states
    for level, (f, ref) in enumerate(zip(features, reference, strict=True)):
        stride = 4 * 2**level
        assert f.shape == (1, 96 * 2**level, 64 // stride, 96 // stride)
        torch.testing.assert_close(f, ref.permute(0, 3, 1, 2), rtol=0, atol=0)


def test_sam2_checkpoint_lands_in_the_right_parameters(tiny_checkpoint, tiny_trunk):
    backbone = build_backbone("hiera_tiny", weights=str(tiny_checkpoint))
    model = backbone.model
    expected = {
        "patch_embed.proj.weight": model.patch_embed.projection.weight,
        "pos_embed": model.pos_embed,
        "pos_embed_window": model.pos_embed_window,
        "blocks.0.norm1.weight": model.blocks[0].layer_norm1.weight,
        "blocks.1.proj.weight": model.blocks[1].proj.weight,
        "blocks.3.norm2.bias": model.blocks[3].layer_norm2.bias,
        "blocks.3.attn.qkv.weight": model.blocks[3].attn.qkv.weight,
        "blocks.10.mlp.layers.0.weight": model.blocks[10].mlp.proj_in.weight,
        "blocks.11.mlp.layers.1.bias": model.blocks[11].mlp.proj_out.bias,
        "blocks.11.attn.proj.weight": model.blocks[11].attn.proj.weight,
    }
    for key, parameter in expected.items():
        assert torch.equal(parameter, tiny_trunk[TRUNK + key]), key
    # Every trunk tensor is used exactly once and nothing else is loaded: the multisets of
    # tensor sums agree.
    loaded = sorted(round(float(p.double().sum()), 6) for p in backbone.state_dict().values())
    source = sorted(round(float(t.double().sum()), 6) for t in tiny_trunk.values())
    assert loaded == source


def test_missing_trunk_key_is_named_in_sam2_naming(tmp_path, tiny_trunk):
    trunk = dict(tiny_trunk)
    del trunk[TRUNK + "blocks.3.attn.qkv.weight"]
    torch.save(sam2_checkpoint(trunk), tmp_path / "ckpt.pt")
    with pytest.raises(
        ConfigError, match=r"missing .*'image_encoder\.trunk\.blocks\.3\.attn\.qkv\.weight'"
    ):
        build_backbone("hiera_tiny", weights=str(tmp_path / "ckpt.pt"))


def test_extra_trunk_key_is_named(tmp_path, tiny_trunk):
    trunk = dict(tiny_trunk)
    trunk[TRUNK + "blocks.3.attn.q_norm.weight"] = torch.zeros(192)
    torch.save(sam2_checkpoint(trunk), tmp_path / "ckpt.pt")
    with pytest.raises(
        ConfigError, match=r"unexpected .*'image_encoder\.trunk\.blocks\.3\.attn\.q_norm\.weight'"
    ):
        build_backbone("hiera_tiny", weights=str(tmp_path / "ckpt.pt"))


def test_wrong_hiera_size_is_reported_with_both_sizes(tiny_checkpoint):
    with pytest.raises(
        ConfigError, match=r"blocks per stage 1,2,7,2 \(hiera_tiny\), but the model is hiera_small"
    ):
        build_backbone("hiera_small", weights=str(tiny_checkpoint))


def test_wrong_tensor_shape_is_named(tmp_path, tiny_trunk):
    trunk = dict(tiny_trunk)
    trunk[TRUNK + "pos_embed"] = torch.zeros(1, 96, 14, 14)
    torch.save(sam2_checkpoint(trunk), tmp_path / "ckpt.pt")
    with pytest.raises(
        ConfigError,
        match=r"'image_encoder\.trunk\.pos_embed' is \(1, 96, 14, 14\), "
        r"hiera_tiny expects \(1, 96, 7, 7\)",
    ):
        build_backbone("hiera_tiny", weights=str(tmp_path / "ckpt.pt"))


def test_hf_folder_saved_with_save_pretrained_round_trips(tmp_path, tiny_checkpoint):
    source = build_backbone("hiera_tiny", weights=str(tiny_checkpoint))
    source.model.save_pretrained(tmp_path / "hf")
    loaded = build_backbone("hiera_tiny", weights=str(tmp_path / "hf"))
    for (ka, a), (kb, b) in zip(
        source.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert ka == kb
        assert torch.equal(a, b), ka


def test_full_hf_sam2_model_folder_uses_the_vision_backbone_only(tmp_path, tiny_checkpoint):
    source = build_backbone("hiera_tiny", weights=str(tiny_checkpoint))
    tensors = {"vision_encoder.backbone." + k: v for k, v in source.model.state_dict().items()}
    tensors["vision_encoder.neck.convs.0.weight"] = torch.zeros(256, 768, 1, 1)
    tensors["mask_decoder.iou_token.weight"] = torch.zeros(1, 256)
    tensors["shared_image_embedding.positional_embedding"] = torch.zeros(2, 128)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "sam2"}))
    save_file(tensors, str(tmp_path / "model.safetensors"))
    loaded = build_backbone("hiera_tiny", weights=str(tmp_path))
    assert torch.equal(
        loaded.model.blocks[5].attn.qkv.weight, source.model.blocks[5].attn.qkv.weight
    )
    assert torch.equal(loaded.model.pos_embed, source.model.pos_embed)


def test_full_hf_sam2_folder_missing_a_backbone_key_names_it(tmp_path):
    tensors = {
        "vision_encoder.backbone." + k: v
        for k, v in build_backbone("hiera_tiny").model.state_dict().items()
    }
    del tensors["vision_encoder.backbone.blocks.2.layer_norm2.bias"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(
        ConfigError, match=r"'vision_encoder\.backbone\.blocks\.2\.layer_norm2\.bias'"
    ):
        build_backbone("hiera_tiny", weights=str(tmp_path))


def test_stochastic_depth_hook_drops_or_rescales_whole_samples():
    block = nn.Linear(4, 4)  # any module; the hook only sees its input and output
    hook = StochasticDepth(0.5)
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    update = torch.full((64, 4), 3.0)
    # The block input arrives positionally or as the keyword transformers uses.
    for args, kwargs in [((x,), {}), ((), {"hidden_states": x})]:
        out = hook(block.train(), args, kwargs, x + update)
        dropped = torch.isclose(out, x).all(dim=1)
        kept = torch.isclose(out, x + update / 0.5).all(dim=1)
        assert torch.all(dropped ^ kept)  # each sample entirely one or the other
        assert 16 < int(dropped.sum()) < 48
    # In eval mode the hook leaves the block output alone.
    assert hook(block.eval(), (x,), {}, x + update) is None


def test_drop_path_rates_grow_linearly_and_skip_width_changes():
    backbone = build_backbone("hiera_tiny", drop_path=0.11)
    rates = backbone.drop_path_rates
    assert len(rates) == 12
    # Blocks 1, 3 and 10 start stages 2-4 (projection shortcut): never dropped.
    assert [i for i, r in enumerate(rates) if r == 0] == [0, 1, 3, 10]
    assert rates[11] == pytest.approx(0.11)
    assert rates[5] == pytest.approx(0.05)
    hooked = [i for i, b in enumerate(backbone.model.blocks) if b._forward_hooks]
    assert hooked == [2, 4, 5, 6, 7, 8, 9, 11]


def test_drop_path_makes_training_forward_stochastic_and_leaves_eval_alone():
    torch.manual_seed(0)
    backbone = build_backbone("hiera_tiny", drop_path=0.5)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        train_a, train_b = backbone.train()(x)[-1], backbone(x)[-1]
        eval_a, eval_b = backbone.eval()(x)[-1], backbone(x)[-1]
    assert not torch.allclose(train_a, train_b)
    torch.testing.assert_close(eval_a, eval_b, rtol=0, atol=0)
