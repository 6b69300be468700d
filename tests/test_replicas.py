"""Data parallelism without processes: each rank's share of a batch, the loss scale, dropout drawn
over the global batch, and the split of a run's batches; then --shard's partition of a plan."""

import argparse
import csv

import pytest
import torch

from cnnrepro.data import Split, batches
from cnnrepro.experiments import PROFILES, Shard, plan_runs
from cnnrepro.run import main
from cnnrepro.train import GlobalBatchDropout, Replicas, RunConfig


@pytest.mark.parametrize("world", [1, 2, 3, 8])
@pytest.mark.parametrize("total", [8, 9, 31, 64])
def test_shares_cover_a_batch_once_in_rank_order(world, total):
    shares = [Replicas(rank, world).share(total) for rank in range(world)]
    rows = [i for s in shares for i in range(total)[s]]
    assert rows == list(range(total))
    sizes = [s.stop - s.start for s in shares]
    assert max(sizes) - min(sizes) <= 1


def test_loss_scales_make_the_rank_average_the_global_mean():
    """Mean over a share times its scale, averaged over ranks, is the global batch's mean."""
    losses = torch.rand(9, dtype=torch.float64)
    world = 2
    ranks = [Replicas(rank, world) for rank in range(world)]
    scaled = []
    for replicas in ranks:
        share = replicas.share(len(losses))
        scaled.append(losses[share].mean() * replicas.loss_scale())
    torch.testing.assert_close(sum(scaled) / world, losses.mean())


def test_rank_out_of_range_and_batches_that_do_not_split_are_refused():
    with pytest.raises(ValueError, match="rank must be in"):
        Replicas(2, 2)
    with pytest.raises(ValueError, match="batch size 32 is not divisible by the world size 3"):
        Replicas(0, 3).check_batches(128, 32)
    with pytest.raises(ValueError, match="last batch of an epoch holds 1 examples, fewer than the 2"):
        Replicas(0, 2).check_batches(129, 32)
    Replicas(0, 2).check_batches(130, 32)  # a last batch of 2: one each


def test_global_batch_dropout_with_one_process_is_nn_dropout_bit_for_bit():
    x = torch.randn(16, 40, requires_grad=True)
    replicas = Replicas()
    replicas.share(len(x))
    ours = GlobalBatchDropout(0.5, replicas)
    torch.manual_seed(3)
    expected = torch.nn.Dropout(0.5)(x)
    expected.sum().backward()
    expected_grad, x.grad = x.grad, None
    torch.manual_seed(3)
    got = ours(x)
    got.sum().backward()
    assert torch.equal(got, expected) and torch.equal(x.grad, expected_grad)
    assert torch.equal(ours.eval()(x), x)


def test_global_batch_dropout_shares_are_rows_of_the_one_process_mask():
    x = torch.randn(9, 3, 5)
    torch.manual_seed(7)
    whole = GlobalBatchDropout(0.3, replicas := Replicas())
    replicas.share(len(x))
    expected = whole(x)
    parts = []
    for rank in range(2):
        replicas = Replicas(rank, 2)
        rows = replicas.share(len(x))
        torch.manual_seed(7)  # every rank's generator is in the same state
        parts.append(GlobalBatchDropout(0.3, replicas)(x[rows]))
    assert torch.equal(torch.cat(parts), expected)


@pytest.mark.parametrize("augment", [False, True])
def test_batch_shares_are_cut_from_the_one_process_batches(augment):
    split = Split(torch.randn(23, 1, 6, 6), torch.arange(23))

    def run(share=None):
        return list(batches(split, 8, torch.Generator().manual_seed(1), augment=augment, share=share))

    whole = run()
    ranks = [run(Replicas(rank, 2).share) for rank in range(2)]
    for i, (images, labels) in enumerate(whole):
        assert torch.equal(torch.cat([r[i][0] for r in ranks]), images)
        assert torch.equal(torch.cat([r[i][1] for r in ranks]), labels)


def test_world_size_and_sync_bn_name_the_run_and_defaults_keep_older_keys():
    config = RunConfig("lenet5", "mnist5k")
    assert config.key() == "4bd296e6d174b05f"  # its key at d6631c1, before the fields existed
    two = RunConfig("lenet5", "mnist5k", world_size=2)
    assert (
        len({config.key(), two.key(), RunConfig("lenet5", "mnist5k", world_size=2, sync_bn=True).key()}) == 3
    )
    with pytest.raises(ValueError, match="sync_bn needs more than one"):
        RunConfig("lenet5", "mnist5k", sync_bn=True)


def test_shard_parsing():
    assert Shard.parse("3/8") == Shard(3, 8) and str(Shard(3, 8)) == "3/8"
    for bad, said in [
        ("8/8", "0 <= I < N"),
        ("1/0", "N >= 1"),
        ("a/b", "expected I/N"),
        ("3", "expected I/N"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=said):
            Shard.parse(bad)


def test_shards_partition_any_plan_and_a_run_keeps_its_shard():
    profile = PROFILES["quick"]
    small = plan_runs(["lenet5", "resnet20"], profile, [0, 1])
    large = plan_runs(["lenet5", "resnet20", "vgg11", "plain56"], profile, [0, 1, 2, 3])
    for plan in (small, large):
        keys = [c.key() for c in plan]
        owners = [[i for i in range(3) if Shard(i, 3).holds(k)] for k in keys]
        assert all(len(o) == 1 for o in owners)
    shard_of = {c.key(): next(i for i in range(3) if Shard(i, 3).holds(c.key())) for c in large}
    assert all(shard_of[c.key()] == next(i for i in range(3) if Shard(i, 3).holds(c.key())) for c in small)


def read_keys(path):
    with open(path, newline="") as f:
        return sorted(row["key"] for row in csv.DictReader(f))


def test_three_shards_into_one_store_record_exactly_the_unsharded_plan(tmp_path):
    argv = ["--profile", "smoke", "--models", "lenet5", "plain20", "--seeds", "0", "1", "2", "--no-report"]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    for i in range(3):
        assert main([*argv, "--out", str(tmp_path / "sharded"), "--shard", f"{i}/3"]) == 0
    whole = read_keys(tmp_path / "whole" / "runs.csv")
    assert len(whole) == 6 and read_keys(tmp_path / "sharded" / "runs.csv") == whole
    assert read_keys(tmp_path / "sharded" / "results.csv") == read_keys(tmp_path / "whole" / "results.csv")
