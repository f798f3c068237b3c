import torch

from vidseg.models import build_head

IN_CHANNELS = (16, 32, 40, 64)


def _features(batch=2, size=32):
    gen = torch.Generator().manual_seed(1)
    return [
        torch.randn(batch, c, size >> i, size >> i, generator=gen)
        for i, c in enumerate(IN_CHANNELS)
    ]


def test_matches_transformers_segformer_decode_head():
    from transformers import SegformerConfig
    from transformers.models.segformer.modeling_segformer import SegformerDecodeHead

    config = SegformerConfig(hidden_sizes=list(IN_CHANNELS), decoder_hidden_size=24, num_labels=6)
    torch.manual_seed(0)
    reference = SegformerDecodeHead(config)
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
        reference.batch_norm.running_mean.uniform_(-1, 1)
        reference.batch_norm.running_var.uniform_(0.5, 2)
    reference.eval()
    # transformers 5 calls the per-level projections "linear_projections", checkpoints "linear_c".
    state = {
        k.replace("linear_projections.", "linear_c."): v for k, v in reference.state_dict().items()
    }
    ours = build_head("segformer", IN_CHANNELS, num_classes=6, channels=24).eval()
    ours.load_state_dict(state, strict=True)
    features = _features()
    with torch.no_grad():
        expected = reference(features)
        logits = ours(features)
    assert logits.shape == (2, 6, 32, 32)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_decode_features_then_classify_is_forward():
    head = build_head("segformer", IN_CHANNELS, num_classes=3, channels=16).eval()
    features = _features(batch=1)
    with torch.no_grad():
        decoded = head.decode_features(features)
        assert decoded.shape == (1, 16, 32, 32)
        assert decoded.min() >= 0
        torch.testing.assert_close(head(features), head.classify(decoded), rtol=0, atol=0)


def test_parameter_count_follows_the_layer_shapes():
    ch, k = 768, 8
    head = build_head("segformer", (64, 128, 320, 512), num_classes=k, channels=ch)
    expected = sum(c * ch + ch for c in (64, 128, 320, 512)) + 4 * ch * ch + 2 * ch + ch * k + k
    assert sum(p.numel() for p in head.parameters()) == expected
