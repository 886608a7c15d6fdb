"""Network namespaces for a :class:`~flarelab.lab.topology.Topology`: the plan and its runner.

:func:`plan` is pure: it turns a topology into the commands (``ip``, ``sysctl``, ``nft``)
that build it, in phases, and those that tear it down. :class:`NetnsRunner` runs them.
Everything a lab makes is a network namespace named ``<prefix>-<id>-<name>``
(``flab-3fa2c1-relay``); interfaces live inside those namespaces only, so nothing touches
the machine's own network and two labs never collide. A lab holds a lock file
(``/run/flarelab-lab/<prefix>-<id>.lock``) while it lives; :func:`cleanup_stale` removes the
namespaces of any lab whose lock nobody holds (a run that was killed), ending the processes
still inside them.

The layout (interface names inside each namespace):

* ``<prefix>-<id>-internet``: the bridge ``inet0`` and one port per attachment (``port<n>``)
  -- or, with latency, TAP devices the user-space switch moves out (``tap<n>``); no
  addresses, no routes, no path to anything else.
* a public host: ``eth0`` on the internet, its documentation-range address, on-link routes
  for the internet's two ranges, routes to each LAN's IPv6 prefix through its router;
  no default route.
* a router: ``wan0`` on the internet, the bridge ``lan0`` for its LAN (one ``h<n>`` port per
  host), forwarding on, and its NAT kind's nftables ruleset.
* a LAN host: ``eth0`` on its router's ``lan0``, default routes through the router.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import re
import secrets
import shlex
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import trio

from .errors import LabSetupError, LabUnavailableError
from .nat_kinds import LAN_IFACE, WAN_IFACE, ruleset
from .topology import INTERNET_V4, INTERNET_V6, ROUTERS_V4, LabHost, LabRouter, Topology

__all__ = [
    "DEFAULT_PREFIX",
    "LOCK_DIR",
    "NETNS_DIR",
    "REQUIRED_TOOLS",
    "Command",
    "LabLock",
    "LabNames",
    "LabPlan",
    "NetnsRunner",
    "SwitchPort",
    "check_available",
    "cleanup_stale",
    "list_lab_namespaces",
    "plan",
]

DEFAULT_PREFIX: Final = "flab"
NETNS_DIR: Final = Path("/run/netns")
LOCK_DIR: Final = Path("/run/flarelab-lab")
#: the tools a lab needs, and the Debian package of each
REQUIRED_TOOLS: Final = {"ip": "iproute2", "nft": "nftables", "conntrack": "conntrack",
                         "sysctl": "procps"}
INTERNET: Final = "internet"
BRIDGE: Final = "inet0"
_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,7}$")
_LAB_ID = re.compile(r"^[0-9a-f]{6}$")
#: how long a command that builds or removes the lab may take
COMMAND_TIMEOUT: Final = 20.0


@dataclass(frozen=True, slots=True)
class Command:
    """One command: its argv, what to feed its stdin, and what it is for."""

    argv: tuple[str, ...]
    input: str | None = None
    what: str = ""

    def __str__(self) -> str:
        text = shlex.join(self.argv)
        return f"{text} <<EOF\n{self.input}EOF" if self.input is not None else text


@dataclass(frozen=True, slots=True)
class LabNames:
    """How one lab names its namespaces: ``<prefix>-<id>-<name>``."""

    prefix: str = DEFAULT_PREFIX
    lab_id: str = field(default_factory=lambda: secrets.token_hex(3))

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise LabSetupError(f"bad lab prefix {self.prefix!r}: 1-8 lower-case letters "
                                "and digits, starting with a letter")
        if not _LAB_ID.match(self.lab_id):
            raise LabSetupError(f"bad lab id {self.lab_id!r}: six hex digits")

    @property
    def stem(self) -> str:
        """``<prefix>-<id>``: the start of every name this lab owns."""
        return f"{self.prefix}-{self.lab_id}"

    def netns(self, name: str) -> str:
        """The namespace of the host or router ``name`` (or ``internet``)."""
        return f"{self.stem}-{name}"

    @property
    def internet(self) -> str:
        """The namespace of the internet (bridge or switch ports)."""
        return self.netns(INTERNET)

    @property
    def lock_path(self) -> Path:
        """The lock file this lab holds while it lives."""
        return LOCK_DIR / f"{self.stem}.lock"


@dataclass(frozen=True, slots=True)
class SwitchPort:
    """One attachment to the user-space switch: the TAP it makes and where it goes."""

    index: int
    tap: str
    netns: str
    ifname: str
    latency: float


@dataclass(frozen=True, slots=True)
class LabPlan:
    """The commands that build and remove one lab, in the order they must run.

    ``create`` makes the namespaces and sets their sysctls; ``internet`` joins every
    attachment to the internet (veths into the bridge; or, when ``switch_ports`` is not
    empty, moves the switch's TAP devices into place -- run it after the switch made
    them); ``configure`` adds the LANs, addresses, routes and rulesets; ``teardown``
    deletes the namespaces (which removes everything inside them).
    """

    names: LabNames
    namespaces: tuple[str, ...]
    create: tuple[Command, ...]
    internet: tuple[Command, ...]
    configure: tuple[Command, ...]
    teardown: tuple[Command, ...]
    switch_ports: tuple[SwitchPort, ...] = ()

    def all_setup(self) -> tuple[Command, ...]:
        """Every setup command, in order (with a switch, the switch must run before
        ``internet``)."""
        return (*self.create, *self.internet, *self.configure)

    def script(self) -> str:
        """The whole plan as a shell script, for reading (and debugging by hand)."""
        parts = ["# setup", *map(str, self.all_setup()), "# teardown", *map(str, self.teardown)]
        return "\n".join(parts) + "\n"


def _ip(netns: str, *args: str, what: str = "") -> Command:
    return Command(("ip", "-n", netns, *args), what=what)


def _in_ns(netns: str, *args: str, input: str | None = None, what: str = "") -> Command:
    return Command(("ip", "netns", "exec", netns, *args), input=input, what=what)


def _sysctl(netns: str, settings: dict[str, str]) -> Command:
    pairs = [f"{key}={value}" for key, value in settings.items()]
    # -e: keys this kernel lacks (e.g. bridge netfilter) are skipped, not fatal
    return _in_ns(netns, "sysctl", "-q", "-e", "-w", *pairs, what="sysctls")


def plan(topology: Topology, names: LabNames | None = None) -> LabPlan:
    """Return the commands that build ``topology`` (see :class:`LabPlan`)."""
    names = names or LabNames()
    ipv6 = topology.ipv6
    inet = names.internet
    namespaces = [inet, *(names.netns(h.name) for h in topology.public)]
    for router in topology.routers:
        namespaces.append(names.netns(router.name))
        namespaces.extend(names.netns(h.name) for h in router.hosts)

    create: list[Command] = [Command(("ip", "netns", "add", ns), what="namespace")
                             for ns in namespaces]
    v6 = ({"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0",
           "net.ipv6.conf.all.accept_ra": "0", "net.ipv6.conf.default.accept_ra": "0"}
          if ipv6 else
          {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"})
    # the internet is a plain switch: bridged packets skip any netfilter hook
    create.append(_sysctl(inet, {
        "net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1",
        "net.bridge.bridge-nf-call-iptables": "0", "net.bridge.bridge-nf-call-ip6tables": "0",
        "net.bridge.bridge-nf-call-arptables": "0"}))
    for ns in namespaces[1:]:
        create.append(_sysctl(ns, v6))
    for router in topology.routers:
        create.append(_sysctl(names.netns(router.name), {
            "net.ipv4.ip_forward": "1",
            **({"net.ipv6.conf.all.forwarding": "1"} if ipv6 else {})}))

    # the internet's attachments: public hosts, then routers' WAN sides
    attachments: list[tuple[str, str]] = [(names.netns(h.name), "eth0") for h in topology.public]
    attachments += [(names.netns(r.name), WAN_IFACE) for r in topology.routers]
    internet: list[Command] = []
    switch_ports: list[SwitchPort] = []
    if topology.latency:
        for index, (ns, ifname) in enumerate(attachments):
            tap = f"tap{index}"
            switch_ports.append(SwitchPort(index, tap, ns, ifname, topology.latency))
            internet += [_ip(inet, "link", "set", tap, "netns", ns, what="switch port"),
                         _ip(ns, "link", "set", tap, "name", ifname, what="switch port")]
    else:
        internet += [_ip(inet, "link", "add", BRIDGE, "type", "bridge", what="internet"),
                     _ip(inet, "link", "set", BRIDGE, "up", what="internet")]
        for index, (ns, ifname) in enumerate(attachments):
            port = f"port{index}"
            internet += [
                _ip(ns, "link", "add", ifname, "type", "veth", "peer", "name", port,
                    "netns", inet, what="internet link"),
                _ip(inet, "link", "set", port, "master", BRIDGE, what="internet link"),
                _ip(inet, "link", "set", port, "up", what="internet link"),
            ]

    configure: list[Command] = []
    for host in topology.public:
        configure += _public_host(names.netns(host.name), host, topology)
    for router in topology.routers:
        configure += _router(names.netns(router.name), router, topology, names)

    teardown = tuple(Command(("ip", "netns", "del", ns), what="teardown")
                     for ns in reversed(namespaces))
    return LabPlan(names, tuple(namespaces), tuple(create), tuple(internet), tuple(configure),
                   teardown, tuple(switch_ports))


def _v6_routes(ns: str, dev: str, topology: Topology, *, skip: str | None = None
               ) -> list[Command]:
    return [_ip(ns, "-6", "route", "add", r.lan6, "via", r.wan_ip6, "dev", dev, what="route")
            for r in topology.routers
            if r.lan6 and r.wan_ip6 and r.name != skip]


def _up(ns: str, *ifaces: str) -> list[Command]:
    return [_ip(ns, "link", "set", iface, "up", what="link up") for iface in ("lo", *ifaces)]


def _public_host(ns: str, host: LabHost, topology: Topology) -> list[Command]:
    prefix = INTERNET_V4.split("/")[1]
    out = [_ip(ns, "addr", "add", f"{host.ip}/{prefix}", "dev", "eth0", what="address")]
    if host.ip6:
        out.append(_ip(ns, "addr", "add", f"{host.ip6}/{INTERNET_V6.split('/')[1]}", "dev",
                       "eth0", "nodad", what="address"))
    out += _up(ns, "eth0")
    out.append(_ip(ns, "route", "add", ROUTERS_V4, "dev", "eth0", what="route"))
    out += _v6_routes(ns, "eth0", topology)
    return out


def _router(ns: str, router: LabRouter, topology: Topology, names: LabNames) -> list[Command]:
    lan_prefix = router.lan.split("/")[1]
    out = [
        _ip(ns, "link", "add", LAN_IFACE, "type", "bridge", what="LAN"),
        _ip(ns, "addr", "add", f"{router.wan_ip}/{ROUTERS_V4.split('/')[1]}", "dev", WAN_IFACE,
            what="address"),
        _ip(ns, "addr", "add", f"{router.lan_ip}/{lan_prefix}", "dev", LAN_IFACE,
            what="address"),
    ]
    if router.wan_ip6 and router.lan6 and router.lan_ip6:
        out += [
            _ip(ns, "addr", "add", f"{router.wan_ip6}/{INTERNET_V6.split('/')[1]}", "dev",
                WAN_IFACE, "nodad", what="address"),
            _ip(ns, "addr", "add", f"{router.lan_ip6}/{router.lan6.split('/')[1]}", "dev",
                LAN_IFACE, "nodad", what="address"),
        ]
    out += _up(ns, WAN_IFACE, LAN_IFACE)
    out.append(_ip(ns, "route", "add", INTERNET_V4, "dev", WAN_IFACE, what="route"))
    out += _v6_routes(ns, WAN_IFACE, topology, skip=router.name)
    out.append(_in_ns(ns, "nft", "-f", "-", input=ruleset(router.kind), what="NAT ruleset"))
    for index, host in enumerate(router.hosts):
        host_ns = names.netns(host.name)
        port = f"h{index}"
        out += [
            _ip(host_ns, "link", "add", "eth0", "type", "veth", "peer", "name", port,
                "netns", ns, what="LAN link"),
            _ip(ns, "link", "set", port, "master", LAN_IFACE, what="LAN link"),
            _ip(ns, "link", "set", port, "up", what="LAN link"),
            _ip(host_ns, "addr", "add", f"{host.ip}/{lan_prefix}", "dev", "eth0",
                what="address"),
        ]
        if host.ip6 and router.lan6:
            out.append(_ip(host_ns, "addr", "add", f"{host.ip6}/{router.lan6.split('/')[1]}",
                           "dev", "eth0", "nodad", what="address"))
        out += _up(host_ns, "eth0")
        out.append(_ip(host_ns, "route", "add", "default", "via", router.lan_ip,
                       what="route"))
        if host.ip6 and router.lan_ip6:
            out.append(_ip(host_ns, "-6", "route", "add", "default", "via", router.lan_ip6,
                           what="route"))
    return out


# ---------------------------------------------------------------------- running commands
def check_available(*, latency: bool = False) -> None:
    """Raise :class:`LabUnavailableError` saying why the lab cannot run here, if it cannot.

    Root, the tools, and a kernel that lets us make a network namespace with an nftables
    NAT ruleset in it (root in an unprivileged container cannot); ``latency``: TUN/TAP too.
    """
    import shutil

    if os.geteuid() != 0:
        raise LabUnavailableError("the real NAT lab needs root (network namespaces, "
                                  "nftables); run as root, or use simnet")
    missing = [f"{tool} (apt-get install {package})" for tool, package in REQUIRED_TOOLS.items()
               if shutil.which(tool) is None]
    if missing:
        raise LabUnavailableError(f"the real NAT lab needs {', '.join(missing)}")
    problem = _kernel_problem()
    if problem:
        raise LabUnavailableError(problem)
    if latency and not Path("/dev/net/tun").exists():
        raise LabUnavailableError("no /dev/net/tun: a lab with latency needs TUN/TAP")


@functools.cache
def _kernel_problem() -> str:
    """Make a throwaway namespace with a NAT ruleset; return what failed ("" if nothing).

    It is named like a lab's namespace, so if this process dies halfway, the next lab's
    stale cleanup removes it.
    """
    netns = LabNames().netns("probe")
    steps = [
        (["ip", "netns", "add", netns], None, "cannot create a network namespace"),
        (["ip", "netns", "exec", netns, "nft", "-f", "-"], ruleset("symmetric"),
         "nftables NAT does not work in a network namespace"),
    ]
    try:
        for argv, stdin, what in steps:
            done = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                  timeout=COMMAND_TIMEOUT, check=False)
            if done.returncode != 0:
                return f"the real NAT lab cannot run here: {what}: {done.stderr.strip()}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the real NAT lab cannot run here: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
    return ""


class NetnsRunner:
    """Run a plan's commands (as root), with a bounded time per command."""

    def __init__(self, *, timeout: float = COMMAND_TIMEOUT) -> None:
        self.timeout = timeout
        #: every command run, in order, with its return code
        self.log: list[tuple[Command, int]] = []

    async def run(self, command: Command, *, check: bool = True
                  ) -> subprocess.CompletedProcess[bytes]:
        """Run one command; raise :class:`LabSetupError` if it fails and ``check``."""
        try:
            with trio.fail_after(self.timeout):
                done = await trio.run_process(
                    list(command.argv), check=False, capture_stdout=True, capture_stderr=True,
                    stdin=command.input.encode() if command.input is not None else b"")
        except trio.TooSlowError:
            raise LabSetupError(f"{command.what or 'command'} took over {self.timeout:g} s",
                                command=str(command)) from None
        except OSError as exc:
            raise LabSetupError(f"cannot run {command.argv[0]}: {exc}",
                                command=str(command)) from None
        self.log.append((command, done.returncode))
        if check and done.returncode != 0:
            raise LabSetupError(
                f"{command.what or 'command'} failed (exit {done.returncode}): {command}",
                command=str(command), returncode=done.returncode,
                stderr=done.stderr.decode(errors="replace"))
        return done

    async def run_all(self, commands: Iterable[Command]) -> None:
        """Run commands in order; stop at the first that fails."""
        for command in commands:
            await self.run(command)

    async def remove_namespaces(self, namespaces: Sequence[str]) -> list[str]:
        """End the processes inside each namespace, then delete it; return the problems.

        Never raises: teardown goes as far as it can.
        """
        problems = []
        for ns in namespaces:
            with contextlib.suppress(LabSetupError):
                listed = await self.run(Command(("ip", "netns", "pids", ns)), check=False)
                for pid in listed.stdout.split():
                    _kill(int(pid))
        for ns in namespaces:
            if not (NETNS_DIR / ns).exists():
                continue
            try:
                await self.run(Command(("ip", "netns", "del", ns), what="teardown"))
            except LabSetupError as exc:
                problems.append(str(exc))
        return problems


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------- locks and stale labs
class LabLock:
    """The lock file a live lab holds (flock); a lab whose lock is free is stale."""

    def __init__(self, names: LabNames) -> None:
        self.path = names.lock_path
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        """Create and lock the file (the lab's id is new, so nobody else holds it).

        A cleanup running at that moment may briefly take the new lock and remove the file;
        then the lock we got is on a removed file, and we try again with a new one.
        """
        LOCK_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        for _ in range(10):
            file = open(self.path, "ab")  # noqa: SIM115 - held for the lab's lifetime
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                file.close()
                raise LabSetupError(f"another lab holds {self.path}") from None
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(file.fileno()).st_ino:
                file.write(f"{os.getpid()}\n".encode())
                file.flush()
                self._file = file
                return
            file.close()
        raise LabSetupError(f"could not keep a lock file at {self.path}")

    def release(self) -> None:
        """Remove the file and drop the lock."""
        if self._file is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._file.close()
        self._file = None

    @staticmethod
    def is_stale(path: Path) -> bool:
        """True if nobody holds the lock at ``path`` (or it does not exist)."""
        try:
            file = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return True
        with file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    return False
                raise
            fcntl.flock(file, fcntl.LOCK_UN)
            return True


def list_lab_namespaces(prefix: str = DEFAULT_PREFIX) -> dict[str, list[str]]:
    """Return the namespaces labs with ``prefix`` made, grouped by their ``<prefix>-<id>``."""
    pattern = re.compile(rf"^({re.escape(prefix)}-[0-9a-f]{{6}})-[a-z][a-z0-9-]*$")
    groups: dict[str, list[str]] = {}
    try:
        entries = sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return groups
    for entry in entries:
        match = pattern.match(entry)
        if match:
            groups.setdefault(match.group(1), []).append(entry)
    return groups


async def cleanup_stale(prefix: str = DEFAULT_PREFIX, runner: NetnsRunner | None = None
                        ) -> list[str]:
    """Remove what labs that are no longer running left behind; return the stems removed.

    A lab is stale when nobody holds its lock file: its process died without tearing down
    (SIGKILL, a crash, a power cut). Labs that are alive are left alone.
    """
    runner = runner or NetnsRunner()
    removed = []
    for stem, namespaces in list_lab_namespaces(prefix).items():
        lock = LOCK_DIR / f"{stem}.lock"
        if not LabLock.is_stale(lock):
            continue
        await runner.remove_namespaces(namespaces)
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        removed.append(stem)
    # locks of labs whose namespaces are all gone
    if LOCK_DIR.is_dir():
        for lock in LOCK_DIR.glob(f"{prefix}-*.lock"):
            if LabLock.is_stale(lock):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
    return removed
