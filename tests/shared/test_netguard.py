"""The outbound address check on IPv6 forms that carry an IPv4 address inside them."""

from __future__ import annotations

import pytest

from shared.errors import UnsafeUrl
from shared.netguard import Policy

# Each form once with a loopback or private IPv4 inside, which must be refused as that IPv4 would be.
REFUSED = [
    "::ffff:10.1.2.3",  # IPv4-mapped
    "::ffff:0:a01:203",  # IPv4-translated (SIIT)
    "::7f00:1",  # IPv4-compatible, 127.0.0.1
    "::a01:203",  # IPv4-compatible, 10.1.2.3
    "64:ff9b::7f00:1",  # NAT64 well-known prefix, 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64, 169.254.169.254
    "64:ff9b:1::a01:203",  # NAT64 local-use prefix: refused whatever it carries
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a01:203::1",  # 6to4 of 10.1.2.3
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo: refused
    "fec0::1",  # site-local (deprecated, private in practice)
]
# The same forms around a public IPv4 (93.184.216.34) are judged by that address.
PUBLIC = ["64:ff9b::5db8:d822", "2002:5db8:d822::1", "::ffff:93.184.216.34"]


@pytest.mark.parametrize("address", REFUSED)
def test_ipv6_forms_are_judged_by_the_ipv4_they_carry(address: str) -> None:
    with pytest.raises(UnsafeUrl, match="not a public address"):
        Policy().check_url(f"http://[{address}]/talk.mp3")


@pytest.mark.parametrize("address", PUBLIC)
def test_ipv6_forms_of_a_public_ipv4_pass(address: str) -> None:
    Policy().check_url(f"http://[{address}]/talk.mp3")


def test_an_allowed_ipv4_network_covers_its_ipv6_forms() -> None:
    policy = Policy(["10.0.0.0/8"])
    for address in ("::ffff:10.1.2.3", "64:ff9b::a01:203", "2002:a01:203::1"):
        policy.check_url(f"http://[{address}]/talk.mp3")
    with pytest.raises(UnsafeUrl):
        policy.check_url("http://[64:ff9b::7f00:1]/talk.mp3")
