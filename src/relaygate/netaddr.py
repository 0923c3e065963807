"""IP networks as allowlists and trusted-proxy lists use them.

Client addresses are compared in IPv4 form when they are IPv4-mapped (``::ffff:a.b.c.d``,
what a dual-stack socket reports for an IPv4 client), so networks written in mapped form
are turned into their IPv4 equivalent here; otherwise they could never match anyone.
"""

from __future__ import annotations

import ipaddress

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def parse_network(text: str) -> IPNetwork:
    """An address or CIDR (host bits allowed); raises ValueError on anything else."""
    net = ipaddress.ip_network(text, strict=False)
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        mapped = net.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network((mapped, net.prefixlen - 96))
    return net
