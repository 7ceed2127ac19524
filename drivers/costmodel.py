"""A roofline cost model of devices and of the model steps they run (pure Python, no torch).

The time of an operation is the roofline bound max(flops / peak, bytes /
bandwidth): a step is limited either by arithmetic or by memory traffic. A
batched model step adds a fixed per-step overhead (kernel launches, host
work). The mock TPU driver and `llmos sim` both take their simulated time from
here, so a simulated device and the simulator agree.

The model is a small decoder-only transformer (`ModelShape`). Counting, per
token fed, 2 FLOPs per weight of the matrix multiplications, plus 4 * d_model
FLOPs per layer for each query-key pair of attention (scores and weighted
sum); a training token costs three times its forward FLOPs (forward, and a
backward pass of twice the work). Bytes: all weights are read once per step,
every cached KV token read is 2 * layers * kv_dim values, every token fed
writes its KV once.

Swapping KV blocks between the device and host memory crosses the host link
(`DeviceSpec.host_bandwidth`): `swap_time` is its cost, paid before the step
whose room it makes (the simulator adds it to that step).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device's peak figures: FLOP/s, memory bandwidth (bytes/s), memory (bytes), step overhead (s).

    `host_bandwidth` is the link to host memory (bytes/s), which swapped KV crosses.
    """

    name: str
    peak_flops: float
    mem_bandwidth: float
    mem_capacity: int
    step_overhead: float
    host_bandwidth: float = 16e9


PRESETS: dict[str, DeviceSpec] = {
    # A modest desktop CPU: a few hundred GFLOP/s of fp32 vector math, dual-channel DDR.
    "cpu": DeviceSpec("cpu", peak_flops=200e9, mem_bandwidth=50e9, mem_capacity=16 * GIB, step_overhead=200e-6,
                      host_bandwidth=25e9),  # a swap is a copy within the same DRAM: read and write
    # Modelled on one Google TPU v4 chip: 275 TFLOP/s bf16, 1200 GB/s HBM2, 32 GiB, a PCIe 3.0 x16 host link.
    "mocktpu": DeviceSpec("mocktpu", peak_flops=275e12, mem_bandwidth=1200e9, mem_capacity=32 * GIB,
                          step_overhead=50e-6, host_bandwidth=16e9),
}


def device(name: str) -> DeviceSpec:
    """The preset spec called `name`; raises KeyError listing the presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"no device preset {name!r}; presets: {', '.join(PRESETS)}") from None


@dataclass(frozen=True, slots=True)
class ModelShape:
    """A decoder-only transformer with grouped-query attention.

    The default is about 0.77 B parameters (16 layers, width 2048, K and V of
    width 512 per layer, as with 8 of 32 heads), in bf16: small enough to be
    "small", large enough that reading the weights dominates a decode step,
    as it does for real models.
    """

    layers: int = 16
    d_model: int = 2048
    kv_dim: int = 512
    vocab: int = 32000
    dtype_bytes: int = 2

    @property
    def params(self) -> int:
        """Weights: per layer Q and O (d^2 each), K and V (d*kv_dim each), an MLP of width 4d (8d^2); the embedding."""
        d = self.d_model
        return self.layers * (10 * d * d + 2 * d * self.kv_dim) + self.vocab * d

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V of one token across all layers."""
        return 2 * self.layers * self.kv_dim * self.dtype_bytes


def op_time(spec: DeviceSpec, flops: float, nbytes: float) -> float:
    """Roofline time of one operation: max(flops / peak, bytes / bandwidth)."""
    return max(flops / spec.peak_flops, nbytes / spec.mem_bandwidth)


def step_cost(model: ModelShape, forward_tokens: int, training_tokens: int,
              attended: int, kv_read: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one batched step.

    `forward_tokens`: inference tokens fed (prefill chunks and decodes);
    `training_tokens`: tokens of training steps; `attended`: query-key pairs
    of attention in the step; `kv_read`: cached KV tokens read.
    """
    matmul = 2 * model.params
    flops = (matmul * (forward_tokens + 3 * training_tokens)
             + 4 * model.layers * model.d_model * attended)
    fed = forward_tokens + training_tokens
    nbytes = (model.params * model.dtype_bytes
              + model.kv_bytes_per_token * (kv_read + fed))
    return flops, nbytes


def step_time(spec: DeviceSpec, model: ModelShape, forward_tokens: int, training_tokens: int = 0,
              attended: int = 0, kv_read: int = 0) -> float:
    """Seconds of one batched model step: the per-step overhead plus the roofline time."""
    if forward_tokens + training_tokens == 0:
        return 0.0
    flops, nbytes = step_cost(model, forward_tokens, training_tokens, attended, kv_read)
    return spec.step_overhead + op_time(spec, flops, nbytes)


def swap_time(spec: DeviceSpec, model: ModelShape, tokens: int) -> float:
    """Seconds to move the KV of `tokens` token slots (whole blocks) across the host link, one way."""
    return tokens * model.kv_bytes_per_token / spec.host_bandwidth
