"""The SharedState contract, run against the in-memory and the Redis implementation alike."""

from __future__ import annotations

from gateway.state import Charge
from gateway.state.memory import InMemoryState
from tests.state.conftest import StateKit
from tests.support.clock import FakeClock


async def test_in_flight_counts_acquire_and_release(kit: StateKit) -> None:
    state = kit.state
    assert state.in_flight("a") == 0
    state.acquire("a")
    state.acquire("a")
    state.acquire("b")
    state.release("a")
    assert (state.in_flight("a"), state.in_flight("b")) == (1, 1)


async def test_every_process_sees_the_sum_of_all_processes(kit: StateKit) -> None:
    other = await kit.peer()
    kit.state.acquire("a")
    kit.state.acquire("a")
    other.acquire("a")
    other.acquire("b")
    await kit.settle()
    assert kit.state.in_flight("a") == 3
    assert other.in_flight("a") == 3
    assert other.in_flight("b") == 1
    other.release("a")
    other.release("b")
    await kit.settle()
    assert kit.state.in_flight("a") == 2
    assert kit.state.in_flight("b") == 0


async def test_an_ejection_by_one_process_holds_for_all(kit: StateKit) -> None:
    other = await kit.peer()
    kit.state.eject("a", 5.0)
    assert kit.state.ejected_until("a") == kit.clock() + 5.0  # the ejecting process: exact
    await kit.settle()
    assert other.ejected_until("a") == kit.expect(kit.clock() + 5.0)
    assert other.ejected_until("a") <= kit.clock() + 5.0
    assert other.ejected_until("b") == 0.0
    # A shorter ejection never shortens a longer one.
    other.eject("a", 0.5)
    await kit.settle()
    assert kit.state.ejected_until("a") == kit.clock() + 5.0
    # It ends when its time is up.
    kit.clock.step(5.0)
    assert kit.state.ejected_until("a") <= kit.clock()


async def test_bucket_grants_its_burst_then_answers_the_wait(kit: StateKit) -> None:
    charge = Charge("subject:alice:inferences", rate=10.0, burst=5.0, cost=1.0)
    grants = [await kit.state.take([charge]) for _ in range(5)]
    assert grants == [0.0] * 5
    # One token at 10/s. (In Redis the server's clock runs on, so the wait only shrinks.)
    assert await kit.state.take([charge]) == kit.expect(0.1)


async def test_in_memory_bucket_refills_at_its_rate_on_the_clock() -> None:
    # (Redis buckets run on the server's clock, which a test cannot move.)
    clock = FakeClock()
    state = InMemoryState(clock=clock)
    charge = Charge("subject:erin:inferences", rate=4.0, burst=2.0, cost=1.0)
    assert [await state.take([charge]) for _ in range(3)] == [0.0, 0.0, 0.25]
    clock.step(0.125)
    assert await state.take([charge]) == 0.125
    clock.step(0.125)
    assert await state.take([charge]) == 0.0
    clock.step(60.0)  # a full bucket holds no more than its burst
    assert [await state.take([charge]) for _ in range(3)] == [0.0, 0.0, 0.25]


async def test_bucket_is_shared_between_processes(kit: StateKit) -> None:
    other = await kit.peer()
    # A slow refill: in Redis, real seconds passing between the takes cannot add a token.
    charge = Charge("subject:bob:inferences", rate=0.01, burst=4.0, cost=1.0)
    granted = 0
    for i in range(8):
        view = kit.state if i % 2 else other
        granted += await view.take([charge]) == 0.0
    assert granted == 4


async def test_a_batch_larger_than_the_bucket_passes_once_and_leaves_a_debt(kit: StateKit) -> None:
    charge = Charge("subject:carol:inferences", rate=100.0, burst=50.0, cost=200.0)
    assert await kit.state.take([charge]) == 0.0
    # 150 in debt: the next batch (needs 50 tokens) waits for 200 tokens at 100/s.
    assert await kit.state.take([charge]) == kit.expect(2.0)


async def test_several_buckets_are_taken_all_or_none(kit: StateKit) -> None:
    roomy = Charge("group:reco:bytes", rate=0.01, burst=100.0, cost=10.0)
    tight = Charge("subject:dave:bytes", rate=0.01, burst=10.0, cost=10.0)
    assert await kit.state.take([roomy, tight]) == 0.0
    assert await kit.state.take([roomy, tight]) > 0  # tight is empty: roomy must not be charged
    for _ in range(9):
        assert await kit.state.take([roomy]) == 0.0
    assert await kit.state.take([roomy]) > 0  # 100 - 10 - 9*10 = 0 left: the refused call took nothing
