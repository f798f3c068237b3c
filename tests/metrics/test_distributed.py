from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vidseg.metrics import ConfusionMeter, all_reduce_confusion, confusion_matrix

NUM_CLASSES = 5
WORLD_SIZE = 2


def shard(rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Rank r's (pred, gt): r + 2 frames of 12x16 with ignored pixels; shards differ in size."""
    rng = np.random.default_rng(100 + rank)
    shape = (rank + 2, 12, 16)
    gt = rng.integers(0, NUM_CLASSES, shape).astype(np.uint8)
    gt[rng.random(shape) < 0.1] = 255
    pred = rng.integers(0, NUM_CLASSES, shape).astype(np.uint8)
    return pred, gt


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        pred, gt = shard(rank)
        local = confusion_matrix(pred, gt, NUM_CLASSES)
        local_before = local.copy()
        out = Path(out_dir)
        np.save(out / f"numpy_{rank}.npy", all_reduce_confusion(local))
        reduced = all_reduce_confusion(torch.from_numpy(local).int())
        assert isinstance(reduced, torch.Tensor)
        assert reduced.dtype == torch.int64
        np.save(out / f"torch_{rank}.npy", reduced.numpy())
        meter = ConfusionMeter(NUM_CLASSES)
        meter.update(pred[:1], gt[:1])
        meter.update(torch.from_numpy(pred[1:]), torch.from_numpy(gt[1:]))
        np.save(out / f"meter_{rank}.npy", meter.reduce().matrix)
        np.save(out / f"local_{rank}.npy", local - local_before)
    finally:
        dist.destroy_process_group()


def test_reduced_matrix_equals_confusion_of_all_shards(tmp_path):
    mp.spawn(
        _worker,
        args=(str(tmp_path / "init"), str(tmp_path)),
        nprocs=WORLD_SIZE,
        join=True,
    )
    pred = np.concatenate([shard(r)[0] for r in range(WORLD_SIZE)])
    gt = np.concatenate([shard(r)[1] for r in range(WORLD_SIZE)])
    expected = confusion_matrix(pred, gt, NUM_CLASSES)
    assert expected.sum() > confusion_matrix(*shard(1), NUM_CLASSES).sum()  # both shards count
    for rank in range(WORLD_SIZE):
        for kind in ("numpy", "torch", "meter"):
            got = np.load(tmp_path / f"{kind}_{rank}.npy")
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, expected, err_msg=f"{kind} on rank {rank}")
        # The caller's local matrix is left as it was.
        np.testing.assert_array_equal(np.load(tmp_path / f"local_{rank}.npy"), 0)


def test_without_process_group_returns_the_same_counts_as_int64():
    assert not dist.is_initialized()
    conf = np.arange(9, dtype=np.int32).reshape(3, 3)
    out = all_reduce_confusion(conf)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, conf)
    tensor = torch.arange(9, dtype=torch.int16).reshape(3, 3)
    out_t = all_reduce_confusion(tensor)
    assert isinstance(out_t, torch.Tensor)
    assert out_t.dtype == torch.int64
    assert torch.equal(out_t, tensor.long())


def test_rejects_non_integer_matrices():
    with pytest.raises(TypeError, match="integer counts, got dtype float64"):
        all_reduce_confusion(np.zeros((2, 2)))
    with pytest.raises(TypeError, match="got list"):
        all_reduce_confusion([[0, 1], [1, 0]])
