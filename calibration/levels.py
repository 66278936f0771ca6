"""The network levels a calibration tells apart, read off the real mesh's devices.

A device's host is its process (:func:`host_of`): jax runs one process per host, and the devices
of one process share the host's fast level (NVLink, ICI, a CPU host's memory); between hosts runs
the slow one (InfiniBand, DCN, the loopback network when the processes share one machine). A
collective over a mesh axis crosses one of them or, for an axis spanning both, both at once, run
hierarchically (:func:`axis_levels`). Pure functions of objects with ``process_index``, so they
are unit-tested on fake devices; no jax here (the fitting side reads the names).
"""

from __future__ import annotations

import math

import numpy as np

from meshcast.errors import MeshcastError

#: The levels a calibration tells apart: the devices of one host (NVLink / ICI / a CPU host's
#: memory) and the network between hosts (InfiniBand / DCN / loopback when the processes share a
#: machine). ``host+cross_host``: a group spanning both, run hierarchically.
WITHIN_HOST, ACROSS_HOSTS = "host", "cross_host"


def host_of(device) -> int:
    """The host a device sits on: its process (jax runs one process per host: devices of one
    process share the host's fast level; a TPU multi-slice job's processes of one slice share
    ICI, so there the key is the slice)."""
    s = getattr(device, "slice_index", None)
    return s if s is not None and getattr(device, "platform", "") == "tpu" else device.process_index


def axis_levels(devices, axis_names, axes: tuple[str, ...]) -> tuple[str, int]:
    """(levels, hosts per group) a collective over mesh ``axes`` crosses on the device array
    ``devices`` (a ``jax.sharding.Mesh``'s ``.devices``, axes ``axis_names`` outermost first):
    ``"host"`` when every group sits on one host, ``"cross_host"`` when each device of a group is
    on its own host, ``"host+cross_host"`` when a group has several devices on each of several
    hosts (the hierarchical form). Groups must agree (a mesh whose groups straddle hosts
    unevenly is a MeshcastError): the level is a property of the axis, as the simulator places it.
    """
    arr = np.asarray(devices)
    names = list(axis_names)
    idx = [names.index(a) for a in axes]
    rest = [i for i in range(arr.ndim) if i not in idx]
    group = math.prod(arr.shape[i] for i in idx)
    groups = arr.transpose(rest + idx).reshape(-1, group)
    kinds = set()
    for g in groups:
        hosts = [host_of(d) for d in g]
        n = len(set(hosts))
        if any(hosts.count(h) != group // n for h in set(hosts)):
            raise MeshcastError(f"mesh: a group over {'+'.join(axes)} holds unequal shares of "
                                f"its hosts ({hosts}); order the mesh hosts outermost")
        kinds.add(n)
    if len(kinds) != 1:
        raise MeshcastError(f"mesh: groups over {'+'.join(axes)} span {sorted(kinds)} hosts; "
                            "order the mesh hosts outermost")
    n = kinds.pop()
    levels = (WITHIN_HOST if n == 1 else ACROSS_HOSTS if n == group
              else f"{WITHIN_HOST}+{ACROSS_HOSTS}")
    return levels, n


def calibration_mesh(n_devices: int, n_hosts: int = 1) -> dict[str, int]:
    """The mesh ``meshcast calibrate`` measures on without ``--mesh``. One host: data 2 x
    expert 2 x model (the rest) when 4 divides the devices, else data only. Several hosts:
    ``data`` = the hosts (outermost, so it runs across them) and expert x model within each host
    (hosts x devices per host), so every level gets measured."""
    if n_hosts <= 1:
        return {"data": 2, "expert": 2, "model": -1} if n_devices % 4 == 0 else {"data": -1}
    per_host = n_devices // n_hosts
    if per_host == 1:
        return {"data": n_hosts}
    return ({"data": n_hosts, "expert": 2, "model": -1} if per_host % 4 == 0
            else {"data": n_hosts, "model": -1})
