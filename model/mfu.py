"""Model FLOPs utilisation: achieved training FLOP/s over the device's peak dense bf16 FLOP/s.

The peaks are the vendors' dense (no 2:4 sparsity) bf16 tensor-core figures per device name, so an
MFU here compares with nanoGPT's, nanochat's and llm.c's. Unknown devices (and CPUs) have no peak:
report achieved FLOP/s only, unless SCRATCHLM_PEAK_FLOPS gives the peak (a device missing from
the table; the tests use it to check the MFU arithmetic on a CPU).
"""
from __future__ import annotations

import os

import torch

PEAK_ENV = "SCRATCHLM_PEAK_FLOPS"

# Matched against torch.cuda.get_device_name() by substring; the longest matching key wins
# ("H100 PCIe" over "H100", "A100" over "A10", "L40S" over "L4").
DEVICE_PEAK_BF16: dict[str, float] = {
    "H200": 989e12,  # SXM; the NVL (PCIe) card is 835e12 but reports "H200 NVL"
    "H200 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,  # SXM
    "H800": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "B100": 1750e12,
    "A100": 312e12,
    "A800": 312e12,
    "A10G": 70e12,
    "A10": 125e12,
    "A6000": 155e12,  # RTX A6000 (dense bf16 with fp32 accumulate: 154.8)
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
    "RTX 6000 Ada": 364e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,  # no bf16 tensor cores: fp16 figure, for reference
    "T4": 65e12,  # likewise fp16
}


def peak_flops(device: torch.device | str | None = None) -> float | None:
    """Peak dense bf16 FLOP/s of a CUDA device by its name (or $SCRATCHLM_PEAK_FLOPS), or None
    (CPU, unknown GPU)."""
    if os.environ.get(PEAK_ENV):
        return float(os.environ[PEAK_ENV])
    device = torch.device(device) if device is not None else None
    if device is None or device.type != "cuda" or not torch.cuda.is_available():
        return None
    return peak_flops_of_name(torch.cuda.get_device_name(device))


def peak_flops_of_name(name: str) -> float | None:
    """The table's entry whose key is the longest substring of `name` (so "H100 PCIe" beats "H100")."""
    matches = [key for key in DEVICE_PEAK_BF16 if key.lower() in name.lower()]
    return DEVICE_PEAK_BF16[max(matches, key=len)] if matches else None


def mfu(flops_per_token: float, tokens_per_s: float, peak: float | None) -> float | None:
    """Fraction of one device's peak used; None without a known peak. Under DDP pass one rank's
    tokens/s: the peak is one GPU's."""
    return flops_per_token * tokens_per_s / peak if peak else None
