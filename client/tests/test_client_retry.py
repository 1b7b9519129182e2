"""Retries ride out a gateway restart: the budgeted backoff in fake time, and the gRPC channel's
reconnect cadence against a real (in-process) server that goes away and comes back."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from sonic_client import AsyncClient, Client, InferenceError, RetryPolicy
from sonic_client._retry import parse_retry_after
from sonic_client._transport import CHANNEL_ARGS

FakeTriton = Any  # the fixture types live in conftest.py (not importable as a module)
FakeClock = Any

X = np.arange(2 * 48 * 48, dtype=np.float32).reshape(2, 48, 48, 1)


def test_retry_policy_math() -> None:
    p = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, multiplier=2.0)
    rng = random.Random(1)
    for retry in range(1, 8):
        cap = min(1.0, 0.1 * 2 ** (retry - 1))
        assert all(0 <= p.delay(retry, None, rng) <= cap for _ in range(50))
    assert p.delay(1, retry_after=3.0, rng=rng) >= 3.0
    assert p.delay(1, retry_after=1e6, rng=rng) == p.max_retry_after
    assert RetryPolicy(jitter=False).delay(3) == pytest.approx(0.4)
    # No attempt cap by default: the time budget decides.
    assert p.should_retry("UNAVAILABLE", 1000, elapsed=89.0)
    assert not p.should_retry("UNAVAILABLE", 2, elapsed=90.0)
    capped = RetryPolicy(max_attempts=5)
    assert capped.should_retry("RESOURCE_EXHAUSTED", 4)
    assert not capped.should_retry("UNAVAILABLE", 5)
    for code in ("INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND",
                 "DEADLINE_EXCEEDED", "INTERNAL"):
        assert not p.should_retry(code, 1)
    assert not RetryPolicy.none().should_retry("UNAVAILABLE", 1)
    exact = RetryPolicy(jitter=False, budget=10.0)
    assert exact.next_delay("UNAVAILABLE", 1, 0.0) == pytest.approx(0.1)
    assert exact.next_delay("UNAVAILABLE", 9, 9.1) == pytest.approx(0.9)  # lands on the budget's end
    assert exact.next_delay("UNAVAILABLE", 10, 10.0) is None
    assert exact.next_delay("RESOURCE_EXHAUSTED", 1, 5.0, retry_after=4.0) == pytest.approx(4.0)
    assert exact.next_delay("RESOURCE_EXHAUSTED", 1, 5.0, retry_after=6.0) is None  # past budget
    with pytest.raises(ValueError, match="budget"):
        RetryPolicy(budget=-1.0)
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(b"0.5") == 0.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None


def test_default_policy_rides_out_a_one_minute_restart(fake_triton: FakeTriton,
                                                       fake_clock: FakeClock) -> None:
    """The gateway is down for 65 s (fake time): the default client keeps trying about once a
    second and gets through within one backoff of the gateway coming back."""
    fake_triton.clock = fake_clock
    fake_triton.unavailable_until = 65.0
    with Client(fake_triton.url, token="good-token", clock=fake_clock,
                sleep=fake_clock.sleep) as c:
        out = c.infer("emtrack_michel", {"main_input": X})
    np.testing.assert_array_equal(out["identity"], X)
    *down, back = fake_triton.call_times
    assert all(t < 65.0 for t in down)
    assert 65.0 <= back <= 65.0 + RetryPolicy().max_backoff
    assert max(fake_clock.sleeps) <= 2.0
    assert out.stats.retries == len(fake_clock.sleeps) == fake_triton.calls - 1


def test_default_budget_is_ninety_seconds(fake_triton: FakeTriton, fake_clock: FakeClock) -> None:
    fake_triton.clock = fake_clock
    fake_triton.unavailable_until = float("inf")
    with Client(fake_triton.url, token="good-token", retry=RetryPolicy(jitter=False),
                clock=fake_clock, sleep=fake_clock.sleep) as c, \
            pytest.raises(InferenceError) as info:
        c.infer("emtrack_michel", {"main_input": X})
    # 0.1 s doubling to the 2 s cap, then every 2 s; the last wait is cut to end at 90 s.
    assert fake_clock.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6] + [2.0] * 43 + [0.9])
    assert fake_clock.now == pytest.approx(90.0)
    assert info.value.code == "UNAVAILABLE"
    assert info.value.attempts == fake_triton.calls == 50
    assert "gave up after 50 attempts over 90.0 s; retry budget 90 s" in str(info.value)


def test_budget_is_configurable(fake_triton: FakeTriton, fake_clock: FakeClock) -> None:
    fake_triton.clock = fake_clock
    fake_triton.unavailable_until = float("inf")
    policy = RetryPolicy(jitter=False, budget=3.0)
    with Client(fake_triton.url, token="good-token", retry=policy, clock=fake_clock,
                sleep=fake_clock.sleep) as c, pytest.raises(InferenceError) as info:
        c.infer("emtrack_michel", {"main_input": X})
    assert fake_clock.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.5])
    assert info.value.attempts == 6


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_retries_resend_the_encoded_request(fake_triton: FakeTriton, fake_clock: FakeClock,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  flavour: str) -> None:
    """A batch's tensors are serialised once; every retry sends that encoded request again."""
    import sonic_client._transport as transport

    encoded: list[int] = []
    real_inputs = transport._grpc_inputs

    def counting(arrays: Any) -> list[Any]:
        encoded.append(1)
        return real_inputs(arrays)

    monkeypatch.setattr(transport, "_grpc_inputs", counting)
    fake_triton.fail_next = 3
    if flavour == "sync":
        with Client(fake_triton.url, token="good-token", clock=fake_clock,
                    sleep=fake_clock.sleep) as c:
            out = c.infer("emtrack_michel", {"main_input": X})
    else:
        async with AsyncClient(fake_triton.url, token="good-token", clock=fake_clock,
                               sleep=fake_clock.async_sleep) as ac:
            out = await ac.infer("emtrack_michel", {"main_input": X})
    np.testing.assert_array_equal(out["identity"], X)
    assert out.stats.retries == 3
    assert fake_triton.calls == 4
    assert len(encoded) == 1


async def test_async_client_rides_out_a_restart(fake_triton: FakeTriton,
                                                fake_clock: FakeClock) -> None:
    fake_triton.clock = fake_clock
    fake_triton.unavailable_until = 30.0
    async with AsyncClient(fake_triton.url, token="good-token", clock=fake_clock,
                           sleep=fake_clock.async_sleep) as c:
        out = await c.infer("emtrack_michel", {"main_input": X})
    np.testing.assert_array_equal(out["identity"], X)
    assert 30.0 <= fake_triton.call_times[-1] <= 32.0
    assert out.stats.retries == fake_triton.calls - 1 > 10


def test_channel_options_keep_tritonclient_defaults() -> None:
    args = dict(CHANNEL_ARGS)
    assert args["grpc.max_send_message_length"] == args["grpc.max_receive_message_length"] == 2**31 - 1
    assert args["grpc.max_reconnect_backoff_ms"] <= 1000


def test_grpc_channel_reconnects_promptly(serve_fake: Callable[[FakeTriton], Any],
                                         fake_triton_state: FakeTriton) -> None:
    """Real time, about 2.5 s. While the gateway's port accepts and drops connections (it is
    restarting), the channel tries to connect again every fraction of a second, not on gRPC's
    default 1 s, 1.6 s, 2.6 s... schedule (two tries in 2 s); once a server listens again, the
    retrying call gets through within about a second."""
    state = fake_triton_state
    server = serve_fake(state)
    client = Client(state.url, token="good-token",
                    retry=RetryPolicy(initial_backoff=0.01, max_backoff=0.02, budget=30.0))
    client.infer("emtrack_michel", {"main_input": X})  # connected
    server.stop(grace=None).wait(5)

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", state.port))
    listener.listen(16)
    listener.settimeout(0.05)
    accepted: list[float] = []
    outage_over = threading.Event()

    def drop_connections() -> None:
        while not outage_over.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(time.monotonic())
            conn.close()

    result: dict[str, Any] = {}

    def job() -> None:
        try:
            result["out"] = client.infer("emtrack_michel", {"main_input": X})
        except InferenceError as exc:  # reported by the assertions below
            result["error"] = exc
        result["done"] = time.monotonic()

    dropper = threading.Thread(target=drop_connections)
    runner = threading.Thread(target=job)
    try:
        dropper.start()
        runner.start()
        time.sleep(2.0)
        outage_over.set()
        dropper.join(5)
        listener.close()
        serve_fake(state)
        back = time.monotonic()
        runner.join(10)
    finally:
        outage_over.set()
        listener.close()
        client.close()
    assert len(accepted) >= 4, f"only {len(accepted)} connection attempts in a 2 s outage"
    assert "error" not in result, result.get("error")
    np.testing.assert_array_equal(result["out"]["identity"], X)
    assert result["done"] - back < 2.0
