"""Separate "hosts" on one machine: Linux network namespaces joined by veth
pairs to a bridge, for tests and benchmarks of what crosses a network.

Each host has its own network stack (its own loopback, one address on a
private /24) and so cannot reach another host's loopback-bound ports: a
job server on one host and worker pools on two others talk over real TCP
between namespaces, as they would between machines. The bridge lives in a
namespace of its own, so removing the namespaces removes everything.

Needs root and ``ip`` from iproute2; :func:`unavailable` says why not.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Dict, List, Optional, Sequence

__all__ = ["Hosts", "unavailable"]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def unavailable() -> Optional[str]:
    """Why namespaces cannot be made here, or None if they can."""
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = "fbprobe%d" % os.getpid()
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return "`ip netns add` failed: %s" % made.stderr.strip()
    _ip("netns", "del", probe, check=False)
    return None


class Hosts:
    """Namespaces ``<prefix>-<name>`` on the subnet ``10.<a>.<b>.0/24``.

    Use as a context manager; every process started with :meth:`popen` is
    killed and every namespace deleted on exit.
    """

    def __init__(self, names: Sequence[str], prefix: Optional[str] = None) -> None:
        tag = prefix or "fb%d" % (os.getpid() % 100000)
        self._prefix = tag
        # A subnet per run (the namespaces are private, but two runs at once
        # must not share a bridge name or addresses in the logs).
        n = os.getpid() % 250 + 1
        self.addresses: Dict[str, str] = {
            name: "10.231.%d.%d" % (n, i + 1) for i, name in enumerate(names)
        }
        self._switch = "%s-sw" % tag
        self._procs: List[subprocess.Popen] = []

    def namespace(self, host: str) -> str:
        return "%s-%s" % (self._prefix, host)

    def __enter__(self) -> "Hosts":
        try:
            _ip("netns", "add", self._switch)
            _ip("-n", self._switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self._switch, "link", "set", "br0", "up")
            for i, (host, address) in enumerate(self.addresses.items()):
                ns = self.namespace(host)
                _ip("netns", "add", ns)
                # Interface names are at most 15 characters.
                outside, inside = "v%d-%d" % (os.getpid() % 10000, i), "eth0"
                _ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", ns)
                _ip("link", "set", outside, "netns", self._switch)
                _ip("-n", self._switch, "link", "set", outside, "master", "br0", "up")
                _ip("-n", ns, "addr", "add", address + "/24", "dev", inside)
                _ip("-n", ns, "link", "set", inside, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def popen(self, host: str, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Starts ``argv`` on ``host``, in a process group of its own."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace(host), *argv], start_new_session=True, **kwargs
        )
        self._procs.append(proc)
        return proc

    def run(self, host: str, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.namespace(host), *argv], **kwargs)

    def pids(self, host: str) -> List[int]:
        out = _ip("netns", "pids", self.namespace(host), check=False).stdout
        return [int(p) for p in out.split()]

    def kill_host(self, host: str) -> int:
        """Kills every process on ``host`` at once, as a power cut would;
        returns how many there were."""
        pids = self.pids(host)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def cut_off(self, host: str) -> None:
        """Takes ``host``'s link down: its processes live on, but whatever
        it sends or is sent is dropped, with no reset (a network partition,
        or a host that lost power, as its peers see it)."""
        _ip("-n", self.namespace(host), "link", "set", "eth0", "down")

    def __exit__(self, *exc) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for host in self.addresses:
            self.kill_host(host)
        deadline = time.monotonic() + 10
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for host in self.addresses:
            _ip("netns", "del", self.namespace(host), check=False)
        _ip("netns", "del", self._switch, check=False)
