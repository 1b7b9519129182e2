"""The paper's latency model (Eq. 2-5) as the scale-out scenario uses it."""

from __future__ import annotations

import pytest

from benchmarks.eq4 import LatencyModel, cpu_for_saturation, gpu_time, paper_model


def test_flat_below_saturation_and_linear_above() -> None:
    model = LatencyModel(cpu_other=7.0, gpu=1.0, latency=2.0)
    assert model.ideal == pytest.approx(10.0)
    assert model.saturation_clients == pytest.approx(10.0)
    assert model.curve([1, 5, 10]) == pytest.approx([10.0, 10.0, 10.0])
    # Eq. 5: above saturation the per-event time is t_GPU * N / N_GPU.
    assert model.per_event(15) == pytest.approx(15.0)
    assert model.per_event(40) == pytest.approx(40.0)


def test_more_gpus_move_saturation_out() -> None:
    model = LatencyModel(cpu_other=7.0, gpu=1.0, latency=2.0, n_gpu=4)
    assert model.saturation_clients == pytest.approx(40.0)
    assert model.per_event(39) == pytest.approx(10.0)
    assert model.per_event(60) == pytest.approx(15.0)


def test_paper_numbers_put_saturation_near_the_measured_68_per_gpu() -> None:
    model = paper_model()
    assert model.cpu_other == pytest.approx(115.5)
    # Eq. 3 with the paper's terms: about 51 clients per GPU (the paper measured 68 with 4 GPUs).
    assert 45 < model.saturation_clients < 70


def test_gpu_time_counts_one_call_per_batch() -> None:
    # 2,750 patches in batches of 1693: two calls (1693 + 1057).
    assert gpu_time(2750, 1693, 0.002, 80e-6) == pytest.approx(2 * 0.002 + 2750 * 80e-6)
    assert gpu_time(2750, 235, 0.002, 80e-6) == pytest.approx(12 * 0.002 + 2750 * 80e-6)
    with pytest.raises(ValueError, match="positive"):
        gpu_time(0, 235, 0.002, 0.0)


def test_cpu_for_saturation_lands_where_asked() -> None:
    cpu = cpu_for_saturation(8.0, gpu=0.25, latency=0.1)
    assert LatencyModel(cpu_other=cpu, gpu=0.25, latency=0.1).saturation_clients == pytest.approx(8.0)
    with pytest.raises(ValueError, match="unreachable"):
        cpu_for_saturation(1.0, gpu=0.25, latency=0.1)


def test_invalid_terms_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        LatencyModel(cpu_other=1.0, gpu=0.0, latency=0.0)
