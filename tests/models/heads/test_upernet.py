import pytest
import torch

from vidseg.errors import ConfigError
from vidseg.models import HEADS, build_head
from vidseg.models.heads.upernet import UPerNetHead

IN_CHANNELS = (16, 32, 64, 128)


def _features(batch=2, size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, c, size >> i, size >> i, generator=gen)
        for i, c in enumerate(IN_CHANNELS)
    ]


def _randomize(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.2)
    return module


def test_matches_transformers_upernet_head_key_for_key_and_value_for_value():
    from transformers import UperNetConfig
    from transformers.models.upernet.modeling_upernet import UperNetHead as HFUperNetHead

    config = UperNetConfig(hidden_size=24, pool_scales=[1, 2, 3, 6], num_labels=5)
    reference = _randomize(HFUperNetHead(config, in_channels=list(IN_CHANNELS))).eval()
    ours = build_head("upernet", IN_CHANNELS, num_classes=5, channels=24).eval()
    ref_state = reference.state_dict()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref_state.items()
    }
    ours.load_state_dict(ref_state, strict=True)
    features = _features()
    with torch.no_grad():
        expected = reference(features)
        logits = ours(features)
    assert logits.shape == (2, 5, 32, 32)  # stride of level 0
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_forward_is_classify_of_decode_features_and_dropout_is_only_in_classify():
    head = build_head("upernet", IN_CHANNELS, num_classes=3, channels=8, dropout=0.5)
    features = _features()
    head.train()
    with torch.no_grad():
        a, b = head.decode_features(features), head.decode_features(features)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert a.shape == (2, 8, 32, 32)
        assert a.min() >= 0  # after ReLU
        assert not torch.equal(head.classify(a), head.classify(a))  # channel dropout active
        head.eval()
        torch.testing.assert_close(head(features), head.classify(head.decode_features(features)))
        expected = torch.einsum("bchw,kc->bkhw", a, head.classifier.weight[:, :, 0, 0])
        expected = expected + head.classifier.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(head.classify(a), expected, rtol=1e-5, atol=1e-5)


def test_parameter_count_follows_the_layer_shapes():
    ch, k, c = 256, 8, IN_CHANNELS
    head = UPerNetHead(c, num_classes=k, channels=ch)
    bn = 2 * ch  # BatchNorm weight + bias
    expected = (
        4 * (c[-1] * ch + bn)  # PPM conv1x1
        + (c[-1] + 4 * ch) * ch * 9
        + bn  # bottleneck conv3x3
        + sum(ci * ch + bn for ci in c[:-1])  # laterals
        + 3 * (ch * ch * 9 + bn)  # FPN convs
        + 4 * ch * ch * 9
        + bn  # fpn_bottleneck
        + ch * k
        + k  # classifier with bias
    )
    assert sum(p.numel() for p in head.parameters()) == expected


def test_bad_head_arguments_are_named():
    assert set(HEADS) == {"upernet", "segformer"}
    with pytest.raises(ConfigError, match="unknown head 'upernett'; did you mean 'upernet'"):
        build_head("upernett", IN_CHANNELS, 3, 8)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5"):
        build_head("upernet", IN_CHANNELS, 3, 8, dropout=1.5)
    with pytest.raises(ValueError, match="num_classes and channels must be >= 1, got 0, 8"):
        build_head("upernet", IN_CHANNELS, 0, 8)
    with pytest.raises(ValueError, match="expected 4 feature maps, got 3"):
        build_head("upernet", IN_CHANNELS, 3, 8)(_features()[:3])
