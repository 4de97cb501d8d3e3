"""The one place a device name becomes a torch device, and torch's CPU threads are set for a while."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from instaseg.errors import UserError


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without it is a user error, not a crash later."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {str(device)!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA was asked for but no GPU is available (use --device cpu)")
    return device


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads at ``count`` (None: as they are) for the block, then back as they were: a process
    that benchmarks or trains in passing (the API, a test run) keeps its own setting, and with it its results bit
    for bit (1 and 2 threads round convolutions differently on some CPUs)."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(int(count))
    try:
        yield
    finally:
        torch.set_num_threads(before)
