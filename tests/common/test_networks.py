"""Membership in configured networks, asked many times over for the same clients."""

from __future__ import annotations

from elemta.common.networks import Networks


def test_addresses_inside_and_outside_the_networks_answer_the_same_every_time():
    trusted = Networks(["10.0.0.0/8", "2001:db8::/32"])
    for _ in range(3):
        assert "10.1.2.3" in trusted
        assert "::ffff:10.1.2.3" in trusted  # IPv4-mapped counts as the IPv4 address
        assert "2001:db8::1%eth0" in trusted  # the zone id is ignored
        assert "192.0.2.1" not in trusted
        assert "not an address" not in trusted
        assert "" not in trusted


def test_many_different_clients_still_get_the_right_answer():
    trusted = Networks(["10.0.0.0/16"])
    for round_ in range(2):
        for i in range(10_000):
            ip = f"10.{i % 3}.{i // 3 % 256}.{i // 768 + round_}"  # 10,000 different ones
            assert (ip in trusted) is ip.startswith("10.0."), ip
