"""all_reduce of every metric accumulator across two gloo processes equals one process."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hazardseg.metrics import ComponentMetrics, ConfusionMatrix, PerImageOOD, PooledOOD


def _data():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 24, 32, generator=g)
    labels = torch.zeros(4, 24, 32, dtype=torch.bool)
    labels[:, 5:12, 8:20] = True
    labels[3] = False
    scores += 2 * labels.float()
    target = torch.randint(0, 13, (4, 24, 32), generator=g)
    pred = torch.randint(0, 13, (4, 24, 32), generator=g)
    return scores, labels, target, pred


def _accumulate(images, bits, max_distinct):
    scores, labels, target, pred = _data()
    cm, pooled, per_image = ConfusionMatrix(), PooledOOD(bits, max_distinct), PerImageOOD()
    comps = ComponentMetrics(threshold=1.0)
    for i in images:
        cm.update(pred[i], target[i])
        pooled.update(scores[i], labels[i])
        per_image.update(scores[i], labels[i], image_ids=f"img{i}")
        comps.update(scores[i], labels[i])
    return cm, pooled, per_image, comps


def _worker(rank: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        for bits, max_distinct, inference in (
            (21, 1 << 21, False),
            (17, 100, False),
            (17, 100, True),
        ):
            # exact stage, histogram stage, and state filled under inference mode (as in
            # evaluate) but merged outside it
            with torch.inference_mode(inference):
                mine = _accumulate([rank, rank + 2], bits, max_distinct)
            for acc in mine:
                acc.all_reduce()
            ref = _accumulate(range(4), bits, max_distinct)
            assert torch.equal(mine[0].matrix, ref[0].matrix)
            a, b = mine[1].compute(), ref[1].compute()
            assert mine[1].mode == ref[1].mode
            for key in ("auroc", "aupr", "fpr95", "best_f1", "num_pos", "num_neg"):
                assert a[key] == b[key], key
            assert mine[2].compute() == ref[2].compute()
            ca, cb = mine[3].compute(), ref[3].compute()
            assert ca["f1_per_tau"] == cb["f1_per_tau"]
            assert np.isclose(ca["mean_siou"], cb["mean_siou"])
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_all_reduce_two_processes(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"),), nprocs=2, join=True)


def test_all_reduce_without_process_group_is_noop():
    accs = _accumulate([0, 1], 21, 1 << 21)
    before = accs[1].compute()["auroc"]
    for acc in accs:
        acc.all_reduce()
    assert accs[1].compute()["auroc"] == before
