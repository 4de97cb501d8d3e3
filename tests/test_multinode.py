"""Multi-node training as a cluster runs it: two "nodes" of one process each on localhost, started by torchrun
(what a SLURM or Kubernetes job does per node), talking over gloo. Only global rank 0 writes the run's outputs."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from instaseg.data.synthetic import generate_synthetic
from tiny import TINY_ARGS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_one_process_each_over_gloo(tmp_path: Path) -> None:
    # 9 images: 7 train, 2 val; per node 4 training images (the sampler pads 7 to 8) = 2 steps of 2 per epoch
    data = generate_synthetic(tmp_path / "data", num_images=9, img_size=64, seed=2)
    out = tmp_path / "run"
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
             f"--node_rank={rank}", "--master_addr=127.0.0.1", f"--master_port={port}",
             "-m", "instaseg", "train", "--model", "maskrcnn_fast", "--data", str(data), "--device", "cpu",
             "--devices", "1", "--num-nodes", "2", "--epochs", "2", "--out", str(out), *TINY_ARGS],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "best mask AP" in logs[0] and "best mask AP" not in logs[1]  # rank 0 reports, rank 1 stays quiet

    last = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 4 and last["epoch"] == 1  # 2 steps per epoch on each node: the data was split
    with open(out / "metrics.csv", newline="") as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == [0, 1]  # one row per epoch: written once, by rank 0
    log = (out / "train.log").read_text()
    assert log.count("epoch 1:") == 1 and log.count("training stopped") == 1  # one writer
    result = json.loads((out / "train_result.json").read_text())
    assert result["done_flag"] and result["best_metrics"]["images"] == 2  # val images counted once, not per node


@pytest.mark.parametrize(
    "env, zero",
    [
        ({}, True),
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),  # torchrun, first node
        ({"RANK": "1", "LOCAL_RANK": "0"}, False),  # torchrun, second node
        ({"SLURM_PROCID": "0", "SLURM_NODEID": "0"}, True),  # srun, one task per GPU
        ({"SLURM_PROCID": "3", "SLURM_NODEID": "1"}, False),
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),  # Lightning's launcher on the second node
    ],
)
def test_only_global_rank_zero_writes_the_run_folder(env: dict, zero: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from instaseg.engine.train import _launching_rank_zero

    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "SLURM_NODEID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _launching_rank_zero() is zero
