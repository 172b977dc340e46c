"""Parameters of a cloud-vs-device simulation study (docs/simulation.md explains each one).

config = SimConfig(users=500, upload_delay_s=120.0, rate=180.0)
config.capacity            # requests/s the cloud's c servers can serve (c / mean service time)
config.sweep_rates()       # the request rates of the utility-vs-rate sweep
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DELAYS_S = (0.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
DEFAULT_LOADS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)  # utilisations of the default rate sweep


@dataclass(frozen=True)
class SimConfig:
    """Everything that shapes a study besides the run, the bundle and the measured device latency."""

    seed: int = 0
    users: int = 1000  # simulated users (fresh users of the run's synthetic world)
    world_seed: int = 0  # the seed given to `dir-cloud synth` for the run's logs
    upload_delay_s: float = 300.0  # behaviour -> cloud feature store ("several minutes", DIR sec. 5)
    rtt_median_ms: float = 200.0  # mobile network round trip: lognormal median
    rtt_sigma: float = 0.8  # lognormal shape (0.8: p95 = 3.7x, p99 = 6.4x the median)
    servers: int = 8  # c of the M/M/c cloud reranking service
    service_ms: float = 40.0  # mean cloud model inference time (exponential service)
    rate: float = 160.0  # requests/s reaching the cloud service (all users, not only the simulated)
    timeout_ms: float = 2000.0  # the app shows the upstream order when the cloud answers later
    device_fetch: bool = False  # device path fetches its slate per request (adds one round trip)
    delays_s: tuple[float, ...] = DEFAULT_DELAYS_S
    rates: tuple[float, ...] = ()  # empty: DEFAULT_LOADS x capacity
    device_users: int = 16  # users replayed through the real device runtime to measure its latency
    queue_arrivals: int = 200_000  # arrivals of total traffic simulated; the users' requests are spread over them

    def __post_init__(self) -> None:
        if self.users < 1 or self.device_users < 1:
            raise ValueError(f"users ({self.users}) and device_users ({self.device_users}) must be >= 1")
        if self.servers < 1:
            raise ValueError(f"servers must be >= 1, got {self.servers}")
        for name in ("upload_delay_s", "rtt_median_ms", "rtt_sigma", "service_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be > 0, got {self.timeout_ms}")
        if any(d < 0 for d in self.delays_s):
            raise ValueError(f"delays_s must be >= 0, got {list(self.delays_s)}")
        for rate in (self.rate, *self.rates):
            self.check_rate(rate)

    @property
    def capacity(self) -> float:
        """Requests per second the servers complete when always busy (inf with zero service time)."""
        return self.servers / (self.service_ms / 1e3) if self.service_ms > 0 else float("inf")

    def check_rate(self, rate: float) -> None:
        if not 0 < rate < self.capacity:
            raise ValueError(
                f"request rate {rate} req/s must be > 0 and below the capacity servers / service time = "
                f"{self.capacity:.1f} req/s (the M/M/c queue has no steady state at or above it); lower "
                "--rate/--rates or raise --servers"
            )

    def sweep_rates(self) -> tuple[float, ...]:
        """The rates of the utility-vs-rate sweep: `rates`, or DEFAULT_LOADS of the capacity."""
        if self.rates:
            return tuple(self.rates)
        if self.service_ms == 0:
            return (self.rate,)
        return tuple(round(load * self.capacity, 6) for load in DEFAULT_LOADS)
