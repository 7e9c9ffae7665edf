"""DDP under ``torchrun``: process-group set-up, rank checks and the re-launch for ``--gpus N``."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from geolink_edge.errors import GeolinkError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only this process writes files and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (or stay single)."""
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_over_ranks(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Average a scalar over the ranks (for logging the same numbers every rank trained on)."""
    if not info.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / info.world_size


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Average the gradients of parameters that live outside the DDP-wrapped module."""
    if not info.enabled:
        return
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad /= info.world_size


def launch_torchrun(gpus: int, argv: list[str]) -> int:
    """Run this same command under ``torchrun`` on ``gpus`` local GPUs; returns its exit code."""
    available = torch.cuda.device_count()
    if gpus > available:
        raise GeolinkError(f"--gpus {gpus}: only {available} CUDA device(s) visible")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={gpus}",
        "-m",
        "geolink_edge.cli",
        *argv,
    ]
    return subprocess.call(cmd)
