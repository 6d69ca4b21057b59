"""RTP port pairs: inside the range, even RTP port + next, in an order nobody can guess."""

import pytest

from engine.defaults import RTP_PORT_REUSE_DELAY_S
from engine.ports import PortAllocator, PortsExhausted


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_pairs_are_even_inside_the_range_and_never_handed_out_twice():
    allocator = PortAllocator(40001, 40020)
    ports = [p for _ in range(9) for p in allocator.allocate(1)]
    assert sorted(ports) == list(range(40002, 40020, 2))  # 40020 has no 40021 inside the range
    with pytest.raises(PortsExhausted):
        allocator.allocate(1)


def test_the_order_is_random():
    orders = {PortAllocator(40000, 49999).allocate(3) for _ in range(20)}
    assert len(orders) == 20  # sequential allocation gave (40000, 40002, 40004) every time
    assert not all(a < b < c for a, b, c in orders)


def test_a_released_pair_rests_while_others_are_free():
    clock = _Clock()
    allocator = PortAllocator(40000, 40039, clock=clock)  # 20 pairs
    released = set(allocator.allocate(10))
    allocator.release(tuple(released))
    fresh = set(allocator.allocate(10))
    assert not fresh & released  # the ten that have not just been released
    assert set(allocator.allocate(10)) == released  # none rested is left: the released ones
    allocator.release(tuple(released))
    clock.now += RTP_PORT_REUSE_DELAY_S
    allocator.release(tuple(fresh))
    assert set(allocator.allocate(10)) == released  # rested again, unlike `fresh`


def test_reserved_ports_are_not_handed_out():
    allocator = PortAllocator(40000, 40005)
    allocator.reserve((40000, 40004))
    assert allocator.allocate(1) == (40002,)
