"""Synthetic ProtoDUNE-like events and the EmTrackMichelId preprocessing, for demos and benchmarks.

The paper's EmTrackMichelId module builds, for every reconstructed wire hit, a 48x48 patch of the
deconvolved wire-vs-time image centred on the hit's wire and peak time, and classifies the patches
with a CNN (outputs ``em_trk_none_netout`` [track, shower, none] and ``michel_netout``). This module
reproduces that data path without detector software:

* :func:`generate_event` draws a collection-plane image (wires x time ticks) with straight-ish
  tracks, branching EM showers, short Michel-electron blobs at some track ends and electronics
  noise, then zero-suppresses it as region-of-interest finding does: most pixels are exactly zero;
* :func:`find_hits` finds hits as local maxima in time above threshold on each wire;
* :func:`extract_patches` cuts the 48x48 patches (zero padded at the image border) in the
  ``[N, 48, 48, 1]`` float32 layout the ``emtrack_michel`` model takes;
* :func:`classify_event` runs the three steps through a :class:`~sonic_client.Client` and reports
  the time split into preprocess / transmit / wait, the terms of the paper's latency model.

Everything is numpy and vectorised; one default event (480 wires x 2000 ticks) takes well under
a second to generate and preprocess.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from ._client import Client

__all__ = [
    "INPUT_NAME",
    "MODEL_NAME",
    "OUTPUT_NAMES",
    "PATCH_SIZE",
    "Event",
    "EventReport",
    "classify_event",
    "extract_patches",
    "find_hits",
    "generate_event",
]

PATCH_SIZE = 48
MODEL_NAME = "emtrack_michel"
INPUT_NAME = "main_input"
OUTPUT_NAMES = ("em_trk_none_netout", "michel_netout")

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Event:
    """One synthetic collection-plane readout: ``image[wire, tick]`` in ADC-like units."""

    event_id: int
    image: F32
    n_tracks: int
    n_showers: int
    n_michels: int


def _deposit(image: F32, w: npt.NDArray[np.float64], t: npt.NDArray[np.float64],
             q: npt.NDArray[np.float64], width: float) -> None:
    """Add charge ``q`` at (w, t) as a Gaussian pulse in time (the deconvolved signal shape)."""
    n_w, n_t = image.shape
    wi = np.rint(w).astype(np.int64)
    ti = np.rint(t).astype(np.int64)
    keep = (wi >= 0) & (wi < n_w) & (ti >= 0) & (ti < n_t)
    wi, ti, q = wi[keep], ti[keep], q[keep]
    half = int(np.ceil(3 * width))
    offsets = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (offsets / width) ** 2)
    kernel /= kernel.sum()
    tt = ti[:, None] + offsets[None, :]
    ww = np.broadcast_to(wi[:, None], tt.shape)
    vals = q[:, None] * kernel[None, :]
    ok = (tt >= 0) & (tt < n_t)
    np.add.at(image, (ww[ok], tt[ok]), vals[ok].astype(np.float32))


def _segment(rng: np.random.Generator, w0: float, t0: float, angle: float, length: float,
             dqdx: float, step: float = 0.5) -> tuple[npt.NDArray[np.float64], ...]:
    s = np.arange(0.0, length, step)
    w = w0 + s * np.cos(angle)
    t = t0 + s * np.sin(angle) * 4.0  # a wire pitch spans several ticks of drift
    # Landau-like fluctuations of the deposited charge.
    q = dqdx * step * (1.0 + rng.gumbel(0.0, 0.25, size=s.size).clip(-0.8, 4.0))
    return w, t, q


def generate_event(
    seed: int | np.random.Generator | None = None,
    *,
    event_id: int = 0,
    n_wires: int = 480,
    n_ticks: int = 2000,
    n_tracks: int | None = None,
    n_showers: int | None = None,
    michel_fraction: float = 0.4,
    noise_rms: float = 2.5,
    zero_suppress: float = 8.0,
) -> Event:
    """Draw one synthetic event; counts left as None are drawn at random.

    Tracks are long straight segments (MIP-like dE/dx), showers are a trunk that branches into
    many short, denser segments with a widening cone, and a fraction of tracks end in a Michel
    electron: a short, dense, randomly oriented segment. Gaussian noise of ``noise_rms`` is added
    and everything below ``zero_suppress`` is set to zero.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n_tracks = int(rng.integers(20, 40)) if n_tracks is None else n_tracks
    n_showers = int(rng.integers(2, 6)) if n_showers is None else n_showers
    image = np.zeros((n_wires, n_ticks), dtype=np.float32)
    ws: list[npt.NDArray[np.float64]] = []
    ts: list[npt.NDArray[np.float64]] = []
    qs: list[npt.NDArray[np.float64]] = []
    n_michels = 0
    for _ in range(n_tracks):
        w0, t0 = rng.uniform(0, n_wires), rng.uniform(0, n_ticks)
        angle = rng.uniform(-np.pi, np.pi)
        length = rng.uniform(40, 400)
        w, t, q = _segment(rng, w0, t0, angle, length, dqdx=60.0)
        ws.append(w)
        ts.append(t)
        qs.append(q)
        if rng.random() < michel_fraction:
            n_michels += 1
            a2 = rng.uniform(-np.pi, np.pi)
            mw, mt, mq = _segment(rng, w[-1], t[-1], a2, rng.uniform(5, 15), dqdx=110.0)
            ws.append(mw)
            ts.append(mt)
            qs.append(mq)
    for _ in range(n_showers):
        w0, t0 = rng.uniform(0, n_wires), rng.uniform(0, n_ticks)
        axis = rng.uniform(-np.pi, np.pi)
        trunk = rng.uniform(10, 30)
        w, t, q = _segment(rng, w0, t0, axis, trunk, dqdx=70.0)
        ws.append(w)
        ts.append(t)
        qs.append(q)
        for _ in range(int(rng.integers(15, 40))):
            d = rng.uniform(0, 60)
            bw = w[-1] + d * np.cos(axis) + rng.normal(0, 0.15 * d + 1)
            bt = t[-1] + 4.0 * d * np.sin(axis) + rng.normal(0, 0.6 * d + 1)
            sw, st, sq = _segment(rng, bw, bt, axis + rng.normal(0, 0.6), rng.uniform(2, 12),
                                  dqdx=90.0)
            ws.append(sw)
            ts.append(st)
            qs.append(sq)
    if ws:
        _deposit(image, np.concatenate(ws), np.concatenate(ts), np.concatenate(qs), width=3.0)
    image += rng.normal(0.0, noise_rms, size=image.shape).astype(np.float32)
    image[image < zero_suppress] = 0.0
    return Event(event_id=event_id, image=image, n_tracks=n_tracks, n_showers=n_showers,
                 n_michels=n_michels)


def find_hits(image: F32, threshold: float = 15.0) -> npt.NDArray[np.int64]:
    """Hits as ``[N, 2]`` (wire, tick) pairs: local maxima in time above ``threshold`` on each wire."""
    left = np.empty_like(image)
    right = np.empty_like(image)
    left[:, 0] = -np.inf
    left[:, 1:] = image[:, :-1]
    right[:, -1] = -np.inf
    right[:, :-1] = image[:, 1:]
    peaks = (image > threshold) & (image >= left) & (image > right)
    return np.argwhere(peaks).astype(np.int64)


def extract_patches(image: F32, hits: npt.NDArray[np.int64], size: int = PATCH_SIZE) -> F32:
    """``[N, size, size, 1]`` float32 patches centred on each hit (wire, tick), zero padded."""
    if hits.size == 0:
        return np.zeros((0, size, size, 1), dtype=np.float32)
    half = size // 2
    padded = np.pad(image, half)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size))
    # Hit (w, t) sits at padded (w + half, t + half); the window starting at (w, t) has it at its
    # centre (index half, half).
    patches = windows[hits[:, 0], hits[:, 1]]
    return np.ascontiguousarray(patches, dtype=np.float32)[..., None]


@dataclass
class EventReport:
    """Per-event result and timing, in the terms of the paper's latency model.

    * ``preprocess_s``: hit finding and patch extraction on the CPU (the paper's t_preprocess);
    * ``transmit_s``: client-side work to put the request on the wire: serialisation and, when
      on, compression (the network transfer itself is inside ``wait_s``: gRPC does not expose
      when the last byte left; ``bytes_sent`` lets you add bytes/link-speed if you know the link);
    * ``wait_s``: time blocked on the service: network, gateway, queueing and GPU inference.
    """

    event_id: int
    n_hits: int
    n_batches: int
    bytes_sent: int
    preprocess_s: float
    transmit_s: float
    wait_s: float
    compression: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return self.preprocess_s + self.transmit_s + self.wait_s


def classify_event(
    client: Client,
    event: Event,
    *,
    batch_size: int = 1693,
    model: str = MODEL_NAME,
    threshold: float = 15.0,
    concurrency: int | None = None,
) -> EventReport:
    """Preprocess ``event``, classify its patches through ``client`` and time each stage.

    ``counts`` tallies the argmax of ``em_trk_none_netout`` (track / shower / none) and
    ``michel_netout > 0.5`` when the model returns those outputs (the identity benchmark model
    does not: counts stay empty).
    """
    t0 = time.perf_counter()
    hits = find_hits(event.image, threshold)
    patches = extract_patches(event.image, hits)
    t1 = time.perf_counter()
    result = client.infer(model, {INPUT_NAME: patches}, batch_size=batch_size,
                          concurrency=concurrency)
    t2 = time.perf_counter()
    stats = result.stats
    counts: dict[str, int] = {}
    cls = result.get(OUTPUT_NAMES[0])
    if cls is not None and cls.ndim == 2 and cls.shape[1] == 3:
        idx = np.argmax(cls, axis=1)
        for i, name in enumerate(("track", "shower", "none")):
            counts[name] = int(np.count_nonzero(idx == i))
    michel = result.get(OUTPUT_NAMES[1])
    if michel is not None:
        counts["michel"] = int(np.count_nonzero(michel.reshape(-1) > 0.5))
    transmit = min(stats.encode_s, t2 - t1)
    return EventReport(
        event_id=event.event_id, n_hits=len(hits), n_batches=stats.n_batches,
        bytes_sent=stats.bytes_sent, preprocess_s=t1 - t0, transmit_s=transmit,
        wait_s=(t2 - t1) - transmit, compression=stats.compression, counts=counts,
    )
