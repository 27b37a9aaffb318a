"""Reading a bundle: is its process an spt unikernel, and with what devices.

A unikernel image is an ordinary OCI image whose rootfs holds the kernel:
`process.args[0]` names it (inside the rootfs, relative to `process.cwd`
when not absolute) and the other args become the guest's arguments. What
solo5-spt takes from its command line comes from the bundle instead:

  memory     `org.spt.mem` (MiB), else the container's memory limit less
             MEM_OVERHEAD_MIB (the tender's own share), else 512 MiB
  block NAME `org.spt.block.NAME` = a path in the container (through the
             bundle's bind mounts, else in the rootfs), else whatever the
             container has at /spt/block/NAME (typically a bind mount:
             `-v /srv/disk.img:/spt/block/storage`)
  net        the container's network namespace: its interface is handed to
             the kernel's one net device as `spt entrypoint` does;
             `org.spt.net.device` picks the device when there are several,
             `org.spt.net.iface` the interface, `org.spt.net.args-template`
             the guest's network arguments (netwire's placeholders; '' for
             none; default the MirageOS flags)

Images packaged for urunc's spt path run too: `com.urunc.unikernel.binary`
names the kernel, `com.urunc.unikernel.cmdline` is the guest's command line,
`com.urunc.unikernel.block` a block image in the rootfs for the kernel's
one block device, `com.urunc.unikernel.hypervisor` must be `spt` if given,
and `com.urunc.unikernel.unikernelType` other than `mirage` turns the
MirageOS network arguments off (write them with org.spt.net.args-template).

Whether a bundle is a unikernel at all is read from the kernel file's ELF
notes (a Solo5 ABI note); anything else is not spt-oci's to run.
"""

from __future__ import annotations

import json
import os
import struct
from collections import deque, namedtuple

from spt import abi
from spt.oci.errors import OciError

MEM_OVERHEAD_MIB = 8
BLOCK_DIR = "/spt/block"
A_MEM = "org.spt.mem"
A_BLOCK = "org.spt.block."
A_NET_DEVICE = "org.spt.net.device"
A_NET_IFACE = "org.spt.net.iface"
A_NET_TEMPLATE = "org.spt.net.args-template"
U_BINARY = "com.urunc.unikernel.binary"
U_CMDLINE = "com.urunc.unikernel.cmdline"
U_BLOCK = "com.urunc.unikernel.block"
U_HYPERVISOR = "com.urunc.unikernel.hypervisor"
U_TYPE = "com.urunc.unikernel.unikernelType"
# Namespaces spt-oci makes or joins for the guest; a user namespace it does
# not do (the guest holds no capability in any namespace anyway).
NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "cgroup")

Bundle = namedtuple("Bundle", "path config rootfs annotations")


class Launch(namedtuple("Launch", "kernel args mem_mib blocks net_device iface template "
                                  "namespaces cgroups_path memory_limit terminal user",
                        defaults=(None,))):
    """What create runs: host paths, the guest's args, its devices.
    `namespaces` maps type -> path (None: a new one); `user` is
    process.user's (uid, gid)."""

    __slots__ = ()


def read(path: str) -> Bundle:
    path = os.path.abspath(path)
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path, "rb") as f:
            config = json.loads(f.read())
    except OSError as exc:
        raise OciError("%s: %s" % (config_path, exc.strerror)) from None
    except ValueError as exc:
        raise OciError("%s: not JSON: %s" % (config_path, exc)) from None
    if not isinstance(config, dict):
        raise OciError("%s: not a JSON object" % config_path)
    root = (config.get("root") or {}).get("path")
    if not isinstance(root, str) or not root:
        raise OciError("%s: no root.path" % config_path)
    rootfs = os.path.normpath(os.path.join(path, root))
    annotations = config.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise OciError("%s: annotations is not an object" % config_path)
    return Bundle(path=path, config=config, rootfs=rootfs,
                  annotations={str(k): str(v) for k, v in annotations.items()})


# -- paths in the container ---------------------------------------------------

def in_root(root: str, path: str, cwd: str = "/") -> str:
    """The host path of `path` as the container's root sees it: symlinks are
    followed inside `root` (an absolute link starts again at `root`, `..`
    stops there), so nothing in an image can point outside it."""
    parts = deque((path if path.startswith("/") else cwd.rstrip("/") + "/" + path).split("/"))
    done: list[str] = []
    links = 0
    while parts:
        part = parts.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, part)
        if os.path.islink(candidate):
            links += 1
            if links > 40:
                raise OciError("%s: too many levels of symbolic links in the image" % path)
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            parts.extendleft(reversed(target.split("/")))
            continue
        done.append(part)
    return os.path.join(root, *done)


def in_container(bundle: Bundle, path: str) -> str:
    """The host path of a container path: through the bind mount whose
    destination holds it (the longest), else in the rootfs."""
    best = None
    for mount in bundle.config.get("mounts") or ():
        dest = os.path.normpath(mount.get("destination") or "")
        options = mount.get("options") or ()
        if mount.get("type") != "bind" and "bind" not in options and "rbind" not in options:
            continue
        if path == dest or path.startswith(dest.rstrip("/") + "/"):
            if best is None or len(dest) > len(best[0]):
                best = (dest, mount.get("source") or "")
    if best is not None:
        dest, source = best
        rest = path[len(dest):].lstrip("/")
        return os.path.join(os.path.join(bundle.path, source), rest) if rest else \
            os.path.join(bundle.path, source)
    return in_root(bundle.rootfs, path)


# -- is it a unikernel --------------------------------------------------------

_EHDR = struct.Struct("<4sBBBBB7xHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
PT_NOTE = 4


def solo5_target(path: str) -> int | None:
    """The Solo5 ABI target of the ELF at `path` (abi.ABI_TARGETS), None
    for anything that is not a Solo5 unikernel (or cannot be read)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_EHDR.size)
            if len(head) < _EHDR.size:
                return None
            fields = _EHDR.unpack(head)
            magic, elf_class, data = fields[0], fields[1], fields[2]
            if magic != b"\x7fELF" or elf_class != 2 or data != 1:
                return None
            phoff, phentsize, phnum = fields[10], fields[14], fields[15]
            if phentsize != _PHDR.size or phnum > 256:
                return None
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            for i in range(len(table) // _PHDR.size):
                p_type, _, offset, _, _, filesz, _, _ = _PHDR.unpack_from(table, i * _PHDR.size)
                if p_type != PT_NOTE or filesz > 1 << 16:
                    continue
                f.seek(offset)
                target = _abi_in_notes(f.read(filesz))
                if target is not None:
                    return target
    except (OSError, struct.error):
        return None
    return None


def _abi_in_notes(notes: bytes) -> int | None:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from("<III", notes, pos)
        name_at = pos + 12
        desc_at = name_at + (-(-namesz // 4) * 4)
        if notes[name_at:name_at + namesz] == abi.NOTE_NAME and ntype == abi.ABI1_NOTE_TYPE:
            if desc_at + 8 <= len(notes):
                return struct.unpack_from("<I", notes, desc_at)[0]
            return None
        pos = desc_at + (-(-descsz // 4) * 4)
    return None


def kernel_path(bundle: Bundle) -> tuple[str, list[str]] | None:
    """(host path of the kernel, guest args) when the bundle's process is a
    Solo5 spt unikernel, None when it is not a unikernel (delegate it)."""
    process = bundle.config.get("process") or {}
    annotations = bundle.annotations
    hypervisor = annotations.get(U_HYPERVISOR)
    if U_BINARY in annotations:
        if hypervisor not in (None, "spt"):
            raise OciError("%s is %r: spt-oci runs Solo5 spt unikernels only"
                           % (U_HYPERVISOR, hypervisor))
        path = in_root(bundle.rootfs, annotations[U_BINARY])
        cmdline = annotations.get(U_CMDLINE)
        args = [cmdline] if cmdline else []
    else:
        argv = process.get("args") or []
        if not argv or not isinstance(argv[0], str):
            return None
        path = in_root(bundle.rootfs, argv[0], process.get("cwd") or "/")
        args = [str(a) for a in argv[1:]]
    target = solo5_target(path)
    if target is None:
        if U_BINARY in annotations:
            raise OciError("%s names %s, which is not a Solo5 unikernel"
                           % (U_BINARY, annotations[U_BINARY]))
        return None
    if target != abi.ABI_TARGET_SPT:
        raise OciError("%s is a Solo5 %s unikernel: spt-oci runs spt unikernels only"
                       % (os.path.relpath(path, bundle.rootfs),
                          abi.ABI_TARGETS.get(target, "target %d" % target)))
    return path, args


# -- devices and memory -------------------------------------------------------

def memory_mib(bundle: Bundle) -> tuple[int, int | None]:
    """(guest memory in MiB, the container's memory limit in bytes or None)."""
    limit = (((bundle.config.get("linux") or {}).get("resources") or {}).get("memory")
             or {}).get("limit")
    limit = limit if isinstance(limit, int) and limit > 0 else None
    given = bundle.annotations.get(A_MEM)
    if given is not None:
        if not given.isdigit() or int(given) == 0:
            raise OciError("%s=%r: expected a number of MiB" % (A_MEM, given))
        mem = int(given)
        if limit is not None and (mem + MEM_OVERHEAD_MIB) << 20 > limit:
            raise OciError("%s=%d does not fit the container's memory limit of %d MiB "
                           "(the tender needs %d MiB besides the guest)"
                           % (A_MEM, mem, limit >> 20, MEM_OVERHEAD_MIB))
        return mem, limit
    if limit is not None:
        mem = (limit >> 20) - MEM_OVERHEAD_MIB
        if mem < 1:
            raise OciError("the container's memory limit (%d bytes) leaves no memory for the "
                           "guest (the tender needs %d MiB)" % (limit, MEM_OVERHEAD_MIB))
        return mem, limit
    return abi.DEFAULT_MEM_MIB, None


def namespaces(bundle: Bundle) -> dict:
    found = {}
    for ns in (bundle.config.get("linux") or {}).get("namespaces") or ():
        kind = ns.get("type")
        if kind == "user":
            raise OciError("the bundle asks for a user namespace: spt-oci does not make one "
                           "(the guest runs with no capability in any namespace)")
        if kind not in NAMESPACES:
            raise OciError("unknown namespace type %r in the bundle" % kind)
        found[kind] = ns.get("path") or None
    return found


def plan(bundle: Bundle, manifest, kernel: str, args: list[str]) -> Launch:
    """Every device the kernel declares, satisfied from the bundle; else one
    line naming what is missing and how to give it."""
    annotations = bundle.annotations
    mem, limit = memory_mib(bundle)
    blocks, nets = {}, []
    missing = []
    for entry in manifest.devices:
        if entry.type == abi.MFT_DEV_BLOCK_BASIC:
            source = block_source(bundle, entry.name, len([e for e in manifest.devices
                                                           if e.type == entry.type]))
            if source is None:
                missing.append("block device '%s' (annotation %s%s=PATH, or a file mounted "
                               "at %s/%s)" % (entry.name, A_BLOCK, entry.name, BLOCK_DIR,
                                              entry.name))
            else:
                blocks[entry.name] = source
        elif entry.type == abi.MFT_DEV_NET_BASIC:
            nets.append(entry.name)
    net_device = None
    ns = namespaces(bundle)
    if nets:
        wanted = annotations.get(A_NET_DEVICE)
        if wanted is not None and wanted not in nets:
            raise OciError("%s=%s: the kernel declares no such net device (it has: %s)"
                           % (A_NET_DEVICE, wanted, ", ".join(nets)))
        if wanted is None and len(nets) > 1:
            raise OciError("the kernel declares net devices %s and spt-oci wires one: "
                           "choose it with annotation %s" % (", ".join(nets), A_NET_DEVICE))
        net_device = wanted or nets[0]
        missing += ["net device '%s' (spt-oci wires only one)" % n for n in nets
                    if n != net_device]
        if "network" not in ns:
            raise OciError("the container shares the host's network namespace: spt-oci "
                           "will not give a host interface to net device '%s'" % net_device)
    if missing:
        raise OciError("%s declares what the bundle does not give: %s"
                       % (os.path.basename(kernel), "; ".join(missing)))
    template = annotations.get(A_NET_TEMPLATE)
    if template is None:
        from spt.netwire import DEFAULT_TEMPLATE

        template = DEFAULT_TEMPLATE if annotations.get(U_TYPE, "mirage") == "mirage" else ""
    linux = bundle.config.get("linux") or {}
    return Launch(kernel=kernel, args=args, mem_mib=mem, blocks=blocks, net_device=net_device,
                  iface=annotations.get(A_NET_IFACE), template=template, namespaces=ns,
                  cgroups_path=linux.get("cgroupsPath"), memory_limit=limit,
                  terminal=bool((bundle.config.get("process") or {}).get("terminal")),
                  user=process_user(bundle))


def process_user(bundle: Bundle) -> tuple[int, int]:
    """process.user's uid and gid (0 where the bundle names none)."""
    user = (bundle.config.get("process") or {}).get("user") or {}
    ids = []
    for key in ("uid", "gid"):
        value = user.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2 ** 32:
            raise OciError("config.json: process.user.%s must be a number" % key)
        ids.append(value)
    return ids[0], ids[1]


def block_source(bundle: Bundle, name: str, block_count: int) -> str | None:
    annotations = bundle.annotations
    if A_BLOCK + name in annotations:
        return in_container(bundle, annotations[A_BLOCK + name])
    if U_BLOCK in annotations and block_count == 1:
        return in_root(bundle.rootfs, annotations[U_BLOCK])
    path = in_container(bundle, "%s/%s" % (BLOCK_DIR, name))
    return path if os.path.lexists(path) else None
