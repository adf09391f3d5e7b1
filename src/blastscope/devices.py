"""Choosing the torch device: ``auto`` picks cuda (its device 0: each ``LocalCluster`` worker is
shown its own GPU, :func:`blastscope.distributed.local_worker_env`), then mps, then cpu."""

from __future__ import annotations

import torch

from blastscope.errors import BlastscopeError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


class DeviceError(BlastscopeError):
    """A device was asked for that this machine does not have."""


def cuda_device_count() -> int:
    """The CUDA GPUs this process can use (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def available_devices() -> list[str]:
    """The device names usable here, best first (``cpu`` is always last)."""
    names = []
    if torch.cuda.is_available():
        names.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``auto`` / ``cpu`` / ``cuda`` / ``cuda:1`` / ``mps`` into a usable ``torch.device``.

    Raises :class:`DeviceError` naming the devices that exist here when the request cannot be met.
    """
    if isinstance(device, torch.device):
        device = str(device)
    name = device.strip().lower()
    here = available_devices()
    if name == "auto":
        return torch.device(here[0])
    kind = name.split(":")[0]
    if kind not in DEVICE_CHOICES[1:]:
        raise DeviceError(f"Unknown device {device!r}: choose one of {', '.join(DEVICE_CHOICES)}.")
    if kind not in here:
        raise DeviceError(
            f"Device {device!r} is not available on this machine (available: {', '.join(here)}). "
            "Use device='auto' to pick the best one, or 'cpu'."
        )
    if kind == "cuda" and ":" in name:
        index = int(name.split(":")[1])
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"Device {device!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s). Use 'cuda:0' or 'auto'."
            )
    return torch.device(name)
