"""The latency model of the SONIC paper (Wang et al. 2021, Eq. 1-5), for the scale-out scenario.

    t_ideal = (1 - p) t_CPU + t_GPU + t_latency                                        (2)
    t_SONIC = (1 - p) t_CPU + t_GPU [1 + max(0, N_CPU/N_GPU - t_ideal/t_GPU)] + t_latency  (4)

Saturation starts at N_CPU/N_GPU = t_ideal/t_GPU (3); above it t_SONIC = t_GPU N_CPU/N_GPU (5).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# The paper's measured terms (large batch, no dynamic batching), seconds per event.
PAPER_T_CPU = 330.0
PAPER_P = 0.65
PAPER_T_PREPROCESS = 7.0
PAPER_T_GPU = 2.5  # 55,000 inferences at ~22,000/s
PAPER_PATCHES_PER_EVENT = 55_000


@dataclass(frozen=True)
class LatencyModel:
    """Per-event terms in seconds: ``cpu_other`` is (1 - p) t_CPU, the part never offloaded."""

    cpu_other: float
    gpu: float
    latency: float
    n_gpu: int = 1

    def __post_init__(self) -> None:
        if self.gpu <= 0 or self.cpu_other < 0 or self.latency < 0 or self.n_gpu < 1:
            raise ValueError(f"latency model terms must be positive: {self}")

    @property
    def ideal(self) -> float:
        """Eq. 2: the per-event time while the GPU is always free."""
        return self.cpu_other + self.gpu + self.latency

    @property
    def saturation_clients(self) -> float:
        """Eq. 3: the number of clients at which the GPU becomes saturated."""
        return self.n_gpu * self.ideal / self.gpu

    def per_event(self, n_clients: float) -> float:
        """Eq. 4: per-event time with ``n_clients`` simultaneous clients."""
        excess = max(0.0, n_clients / self.n_gpu - self.ideal / self.gpu)
        return self.cpu_other + self.gpu * (1.0 + excess) + self.latency

    def curve(self, clients: list[int]) -> list[float]:
        return [self.per_event(n) for n in clients]

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "ideal": self.ideal, "saturation_clients": self.saturation_clients}


def paper_model() -> LatencyModel:
    """The paper's large-batch numbers: saturation near 51 clients per GPU (68 measured)."""
    transmit, travel = 2.05, 0.38
    return LatencyModel(
        cpu_other=(1 - PAPER_P) * PAPER_T_CPU,
        gpu=PAPER_T_GPU,
        latency=PAPER_T_PREPROCESS + transmit + travel,
    )


def gpu_time(patches: int, batch: int, delay_s: float, delay_s_per_item: float) -> float:
    """Service time of one event on the delay model without dynamic batching (one call per batch)."""
    if patches <= 0 or batch <= 0:
        raise ValueError("patches and batch must be positive")
    calls = -(-patches // batch)
    return calls * delay_s + patches * delay_s_per_item


def cpu_for_saturation(target_clients: float, gpu: float, latency: float) -> float:
    """(1 - p) t_CPU that puts Eq. 3's saturation at ``target_clients`` (one GPU)."""
    cpu = target_clients * gpu - gpu - latency
    if cpu < 0:
        raise ValueError(
            f"saturation at {target_clients} clients is unreachable: t_GPU + t_latency alone "
            f"({gpu + latency:.3f} s) already exceeds {target_clients} x t_GPU"
        )
    return cpu
