"""Hand a container's network interface to a guest: the facts, a TAP, tc.

`spt entrypoint` runs as PID 1 of a container whose engine gave it one
interface (a veth `eth0`, typically). These functions, plain and over a
pyroute2 `IPRoute` socket, read what the guest must take over (address,
prefix, gateway, MAC, MTU), create the guest's TAP and connect the two with
tc: an ingress qdisc on each and a match-all u32 filter whose action is
`mirred egress redirect` to the other. Every frame the engine's network
sends to the interface goes to the guest, and every frame the guest sends
leaves through the interface.

Why tc and not a bridge: the interface keeps its address. The host stack
still never answers for it, because it never sees a frame of the
interface's ingress (the redirect steals them all before IP). A restart of
the container in the same namespace therefore rediscovers the same facts
without saved state, and nothing is left half-configured for it to trip on
(Nabla's bridge wiring flushed the address and crash-looped on restart).
tc redirect also works with /32 addresses and proxy-ARP gateways.

What spt owns in the namespace, by exact identity: the TAP `spt0` (not
persistent: it vanishes, with its qdisc, when the guest's fd closes) and the
filters of preference `SPT_PREF` on the interface's ingress. Nothing else
is ever deleted. Each change registers its undo, so a failure before the
guest starts leaves the namespace as it was found.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass
from typing import Callable

from spt.devices.net import IFF_UP, TUN_DEVICE, tunsetiff
from spt.errors import SptError

TAP_NAME = "spt0"
TUN_DEVICE_NUMBER = (10, 200)
# Interface kinds an engine hands to a container. Anything else (a
# physical NIC has no kind at all; a bridge, bond or VLAN is a host's
# plumbing) means this is probably a host's namespace: rewiring it would
# take the host's network away.
CONTAINER_KINDS = ("veth", "macvlan", "ipvlan", "netkit")
# tc names: the ingress hook (what `tc filter ... ingress` means; it works
# for an `ingress` and a `clsact` qdisc alike), and the filter preference
# that marks spt's filters ("SP").
INGRESS_QDISC = 0xFFFF0000
INGRESS_HOOK = 0xFFFFFFF2
SPT_PREF = 0x5350
ETH_P_ALL = 0x0003
IFA_F_SECONDARY = 0x01
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
IN6_ADDR_GEN_MODE_NONE = 1

DEFAULT_TEMPLATE = "--ipv4={ipv4}/{prefix} --ipv4-gateway={gateway}"
PLACEHOLDERS = ("ipv4", "prefix", "gateway", "mac", "mtu", "iface")


@dataclass(frozen=True)
class LinkFacts:
    """The container interface as the guest takes it over."""

    ifname: str
    index: int
    kind: str  # IFLA_INFO_KIND; "" for a physical NIC
    mac: str  # xx:xx:xx:xx:xx:xx
    mtu: int
    ipv4: str
    prefix: int
    gateway: str | None  # the default route's gateway through this interface

    def placeholders(self) -> dict:
        return {"ipv4": self.ipv4, "prefix": self.prefix, "gateway": self.gateway,
                "mac": self.mac, "mtu": self.mtu, "iface": self.ifname}


class Undo:
    """What has been changed so far, undone in reverse on failure."""

    def __init__(self):
        self._steps: list[tuple[str, Callable[[], None]]] = []

    def add(self, what: str, step: Callable[[], None]) -> None:
        self._steps.append((what, step))

    def run(self) -> list[str]:
        """Undo everything; return what could not be undone (never raises:
        the failure that led here is the one the operator must see)."""
        failed = []
        while self._steps:
            what, step = self._steps.pop()
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - reported, not swallowed
                failed.append("%s: %s" % (what, _reason(exc)))
        return failed


def _reason(exc: BaseException) -> str:
    """A netlink or OS error as the operator reads it."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    return str(exc) or type(exc).__name__


def _netlink(what: str, call, *args, **kwargs):
    """One netlink request; its failure becomes a one-line SptError."""
    try:
        return call(*args, **kwargs)
    except Exception as exc:  # pyroute2's NetlinkError is not an OSError
        code = getattr(exc, "code", None)
        hint = " (the container needs CAP_NET_ADMIN)" if code in (errno.EPERM, errno.EACCES) else ""
        raise SptError("%s: %s%s" % (what, _reason(exc), hint)) from None


# -- discovery ---------------------------------------------------------------

def _links(ipr) -> dict[int, dict]:
    links = {}
    for msg in _netlink("cannot list interfaces", ipr.get_links):
        info = msg.get("IFLA_LINKINFO")
        links[msg["index"]] = {
            "name": msg.get("IFLA_IFNAME"),
            "kind": (info.get("IFLA_INFO_KIND") if info else None) or "",
            "mac": msg.get("IFLA_ADDRESS") or "",
            "mtu": msg.get("IFLA_MTU") or 0,
            "flags": msg["flags"],
            "loopback": msg.get("IFLA_IFNAME") == "lo"
                        or msg.get("IFLA_ADDRESS") == "00:00:00:00:00:00",
        }
    return links


def _default_route(ipr) -> dict | None:
    """The main table's IPv4 default route with the lowest metric."""
    best = None
    for msg in _netlink("cannot list routes", ipr.route, "dump", family=socket.AF_INET):
        table = msg.get("RTA_TABLE") or msg["table"]
        if msg["dst_len"] != 0 or table != RT_TABLE_MAIN or msg["type"] != RTN_UNICAST:
            continue
        if msg.get("RTA_OIF") is None:
            continue  # multipath: no single interface to take over
        metric = msg.get("RTA_PRIORITY") or 0
        if best is None or metric < best[0]:
            best = (metric, {"oif": msg.get("RTA_OIF"), "gateway": msg.get("RTA_GATEWAY")})
    return best[1] if best else None


def _choose_interface(links: dict, route: dict | None, ifname: str | None) -> int:
    if ifname is not None:
        for index, link in links.items():
            if link["name"] == ifname:
                if link["loopback"]:
                    raise SptError("%s is the loopback interface" % ifname)
                return index
        raise SptError("no network interface named %s in this namespace" % ifname)
    if route is not None and route["oif"] in links:
        return route["oif"]
    candidates = [i for i, link in links.items()
                  if not link["loopback"] and link["name"] != TAP_NAME]
    if not candidates:
        raise SptError("no network interface besides lo in this namespace "
                       "(run the container with a network)")
    if len(candidates) > 1:
        names = ", ".join(sorted(links[i]["name"] for i in candidates))
        raise SptError("no default route and several interfaces (%s): name one with --iface"
                       % names)
    return candidates[0]


def _primary_ipv4(ipr, index: int, ifname: str) -> tuple[str, int]:
    addrs = _netlink("cannot list addresses of %s" % ifname, ipr.get_addr,
                     family=socket.AF_INET, index=index)
    for msg in addrs:
        flags = msg.get("IFA_FLAGS") or msg["flags"]
        address = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
        if address and not flags & IFA_F_SECONDARY:
            return address, msg["prefixlen"]
    raise SptError("%s has no IPv4 address to give the guest" % ifname)


def discover(ipr, ifname: str | None = None) -> LinkFacts:
    """Read the facts of the interface the guest takes over: `ifname`, else
    the one the default route leaves by, else the only one besides lo.
    Reads only: nothing is changed yet."""
    links = _links(ipr)
    route = _default_route(ipr)
    index = _choose_interface(links, route, ifname)
    link = links[index]
    name = link["name"]
    if not link["flags"] & IFF_UP:
        raise SptError("%s is down" % name)
    if not link["mac"] or link["mtu"] <= 0:
        raise SptError("%s is not an Ethernet interface" % name)
    ipv4, prefix = _primary_ipv4(ipr, index, name)
    gateway = route["gateway"] if route and route["oif"] == index else None
    return LinkFacts(ifname=name, index=index, kind=link["kind"], mac=link["mac"],
                     mtu=link["mtu"], ipv4=ipv4, prefix=prefix, gateway=gateway)


def check_container_interface(facts: LinkFacts) -> None:
    """Refuse what looks like a host's namespace (see CONTAINER_KINDS)."""
    if facts.kind not in CONTAINER_KINDS:
        what = "a %s interface" % facts.kind if facts.kind else "a physical interface"
        raise SptError("%s is %s, not a container's (%s): this looks like a host's network "
                       "namespace; all of its traffic would go to the guest "
                       "(--allow-host-netns to do it anyway)"
                       % (facts.ifname, what, "/".join(CONTAINER_KINDS)))


# -- guest arguments ---------------------------------------------------------

# `{name}` is a placeholder, `{{` and `}}` are literal braces; nothing else
# between braces means anything (no format specs, no attributes, no indexes)
_TEMPLATE_TOKEN = r"\{\{|\}\}|\{([^{}]*)\}|[{}]"


def render_template(template: str, facts: LinkFacts) -> list[str]:
    """The guest's network arguments: `template` split like a shell would,
    each {placeholder} replaced by the interface's fact, `{{`/`}}` by a
    brace. Only the names in PLACEHOLDERS are substituted, each by its value
    as text: no format spec or field expression is evaluated."""
    import re
    import shlex

    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise SptError("--args-template: %s" % exc) from None
    values = facts.placeholders()

    def substitute(match) -> str:
        token, name = match.group(0), match.group(1)
        if token in ("{{", "}}"):
            return token[0]
        if name is None:
            raise SptError("--args-template: %s: a lone %s (write %s%s for a brace)"
                           % (_shown(word), token, token, token))
        if name not in values:
            raise SptError("--args-template: unknown placeholder {%s} (known: %s)"
                           % (_shown(name), ", ".join("{%s}" % p for p in PLACEHOLDERS)))
        if values[name] is None:
            raise SptError("--args-template uses {%s} but %s has no default gateway"
                           % (name, facts.ifname))
        return str(values[name])

    out = []
    for word in words:
        out.append(re.sub(_TEMPLATE_TOKEN, substitute, word))
    return out


def _shown(text: str, limit: int = 60) -> str:
    """Part of a template in a message: escaped, and cut if long."""
    shown = ascii(text)[1:-1]
    return shown if len(shown) <= limit else shown[:limit] + "..."


# -- changes (each registers its undo) ---------------------------------------

def open_tun_device(undo: Undo) -> int:
    """Open /dev/net/tun; where the engine did not put it into the
    container, make the node (character device 10:200) first. That needs
    CAP_MKNOD (in Docker's and containerd's default set, not in podman's)
    and a runtime whose device rules allow the device (runc's built-in
    rules do, except 1.2.0 to 1.2.3; crun's do not). A Kubernetes pod spec
    cannot ask for a device: on runc this is how a pod gets its TAP; on crun
    the pod needs the host's node as a hostPath CharDevice volume (or the
    spt-oci runtime, which needs nothing in the pod, see docs/oci.md)."""
    flags = os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC
    need = ("(the container needs the device: --device %s; in a Kubernetes pod a hostPath "
            "volume of type CharDevice at %s, or spt-oci as the pod's runtime)"
            % (TUN_DEVICE, TUN_DEVICE))
    try:
        return os.open(TUN_DEVICE, flags)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SptError("%s: %s %s" % (TUN_DEVICE, exc.strerror, need)) from None
    directory = os.path.dirname(TUN_DEVICE)
    try:
        if not os.path.isdir(directory):
            os.mkdir(directory, 0o755)
            undo.add("remove %s" % directory, lambda: os.rmdir(directory))
        os.mknod(TUN_DEVICE, stat.S_IFCHR | 0o600, os.makedev(*TUN_DEVICE_NUMBER))
    except OSError as exc:
        raise SptError("%s: No such file or directory, and cannot make it: %s %s"
                       % (TUN_DEVICE, exc.strerror, need)) from None
    undo.add("remove %s" % TUN_DEVICE, lambda: os.unlink(TUN_DEVICE))
    try:
        return os.open(TUN_DEVICE, flags)
    except OSError as exc:
        raise SptError("%s (made here): %s: the runtime does not allow the device %s"
                       % (TUN_DEVICE, exc.strerror, need)) from None


def open_tap(ipr, name: str, mtu: int, undo: Undo) -> tuple[int, int]:
    """Create the guest's TAP `name` (not persistent: it is gone when its
    fd closes), with `mtu`, up. Returns (fd, ifindex)."""
    if _netlink("cannot look up %s" % name, ipr.link_lookup, ifname=name):
        raise SptError("an interface named %s already exists in this namespace "
                       "(another guest running here?)" % name)
    fd = open_tun_device(undo)
    undo.add("close the fd of TAP %s" % name, lambda: os.close(fd))
    try:
        tunsetiff(fd, name)
    except OSError as exc:
        hint = " (the container needs CAP_NET_ADMIN)" if exc.errno == errno.EPERM else ""
        raise SptError("cannot create TAP %s: %s%s" % (name, exc.strerror, hint)) from None
    found = _netlink("cannot look up %s" % name, ipr.link_lookup, ifname=name)
    if not found:
        raise SptError("TAP %s vanished right after it was created" % name)
    index = found[0]
    undo.add("delete TAP %s" % name, lambda: _delete_own_link(ipr, index, name))
    _no_ipv6_address(ipr, index, name)
    _netlink("cannot configure TAP %s" % name, ipr.link, "set", index=index, mtu=mtu, state="up")
    return fd, index


def _no_ipv6_address(ipr, index: int, name: str) -> None:
    """No link-local address on the TAP (address generation mode "none",
    set before it comes up): the container's own stack then sends nothing
    (router solicitations, DAD, MLD) into the guest's interface. A kernel
    without IPv6 has nothing to switch off."""
    try:
        ipr.link("set", index=index, IFLA_AF_SPEC={"attrs": [["AF_INET6", {"attrs": [
            ["IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE]]}]]})
    except Exception as exc:  # pyroute2's NetlinkError
        if getattr(exc, "code", None) not in (errno.EAFNOSUPPORT, errno.EOPNOTSUPP):
            raise SptError("cannot configure TAP %s: %s" % (name, _reason(exc))) from None


def _delete_own_link(ipr, index: int, name: str) -> None:
    """Delete the link only if it is still the one spt created (same index
    and exact name): never a foreign device that took the name since."""
    if index in ipr.link_lookup(ifname=name):
        ipr.link("del", index=index)


def _qdisc_kinds(ipr, index: int, what: str) -> set[str]:
    msgs = _netlink("cannot list qdiscs of %s" % what, ipr.get_qdiscs, index)
    return {msg.get("TCA_KIND") for msg in msgs if msg["index"] == index}


def _own_filters(ipr, index: int, what: str) -> bool:
    msgs = _netlink("cannot list tc filters of %s" % what, ipr.get_filters, index,
                    parent=INGRESS_HOOK)
    return any(msg["index"] == index and msg["info"] >> 16 == SPT_PREF for msg in msgs)


def _delete_own_filters(ipr, index: int) -> None:
    ipr.tc("del-filter", index=index, parent=INGRESS_HOOK, prio=SPT_PREF, protocol=ETH_P_ALL)


def redirect_ingress(ipr, from_index: int, to_index: int, what: str, undo: Undo) -> None:
    """Every frame arriving on `from_index` leaves through `to_index`.

    An ingress qdisc is added if the interface has none (and removed again
    on undo); a filter of spt's preference left by an earlier run (its TAP is
    gone, so it drops everything) is replaced."""
    kinds = _qdisc_kinds(ipr, from_index, what)
    if not kinds & {"ingress", "clsact"}:
        _netlink("cannot add an ingress qdisc to %s" % what, ipr.tc,
                 "add", "ingress", from_index, INGRESS_QDISC)
        undo.add("delete the ingress qdisc of %s" % what,
                 lambda: ipr.tc("del", "ingress", from_index, INGRESS_QDISC))
    if _own_filters(ipr, from_index, what):
        _netlink("cannot remove the tc filter an earlier run left on %s" % what,
                 _delete_own_filters, ipr, from_index)
    # u32 matching nothing-in-particular rather than matchall, which some
    # kernels lack; pyroute2 wants a class id (`target`), which nothing on
    # an ingress hook reads since the redirect steals the frame.
    _netlink("cannot add the tc redirect filter (u32, mirred) to %s" % what, ipr.tc,
             "add-filter", "u32", from_index, parent=INGRESS_HOOK, prio=SPT_PREF,
             protocol=ETH_P_ALL, target=0x10001, keys=["0x0/0x0+0"],
             action={"kind": "mirred", "direction": "egress", "action": "redirect",
                     "ifindex": to_index})
    undo.add("delete spt's tc filter on %s" % what,
             lambda: _delete_own_filters(ipr, from_index))


# -- the whole hand-over -----------------------------------------------------

def wired_options(opts, device: str, tap_fd: int, mac: str, net_args: list[str]):
    """Launcher options with the wired device added, as solo5-spt would
    parse `--net:DEV=@FD --net-mac:DEV=MAC KERNEL NET_ARGS... ARGS...`: the
    values go through the net module's own option parsers."""
    from spt.devices import options

    flags = options()
    net_module, target = flags["net"]
    _, mac_option = flags["net-mac"]
    devices = dict(opts.devices)
    devices[(net_module, device)] = {
        target.key: target.parse(device, "@%d" % tap_fd),
        mac_option.key: mac_option.parse(device, mac),
    }
    return opts._replace(devices=devices, args=list(net_args) + list(opts.args))


def hand_over(ipr, opts, device: str, *, iface: str | None, template: str,
              allow_host_netns: bool, build, undo: Undo):
    """Give this namespace's interface to the guest's net `device`, in the
    order `spt entrypoint` and `spt-oci` share: read the interface's facts,
    render the guest's network arguments, create the TAP and redirect its
    ingress to the interface, `build(wired_opts)` the launch (whatever it
    returns is returned), and only then redirect the interface's ingress to
    the TAP. Every change is registered in `undo` for the caller to run on
    failure. Returns (facts, what build returned)."""
    facts = discover(ipr, iface)
    if not allow_host_netns:
        check_container_interface(facts)
    net_args = render_template(template, facts)
    tap_fd, tap_index = open_tap(ipr, TAP_NAME, facts.mtu, undo)
    redirect_ingress(ipr, tap_index, facts.index, TAP_NAME, undo)
    built = build(wired_options(opts, device, tap_fd, facts.mac, net_args))
    redirect_ingress(ipr, facts.index, tap_index, facts.ifname, undo)
    return facts, built


def describe(device: str, facts: LinkFacts) -> str:
    """The one line that says what the guest got."""
    return ("%s gets %s (%s) %s/%d%s, mac %s, mtu %d, through TAP %s"
            % (device, facts.ifname, facts.kind or "physical", facts.ipv4, facts.prefix,
               " via %s" % facts.gateway if facts.gateway else "", facts.mac, facts.mtu,
               TAP_NAME))
