"""Collectives that every rank may call whatever it holds (plain values on one process)."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


def gather_objects(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank, for any picklable obj (rows with
    different keys, tensors of different sizes, empty lists): one
    ``torch.distributed.all_gather_object``, which every rank must call; [obj] without a
    process group of more than one rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
