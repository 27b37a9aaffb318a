"""`spt inspect KERNEL`: what a unikernel is and what it needs to launch.

Everything shown comes from `spt.image.load`, the launcher's own Image stage,
so a file that `spt inspect` accepts is one `solo5-spt` accepts, and every
refusal carries the launcher's message. `--json` wraps the objects Solo5's
`solo5-elftool query-abi` and `query-manifest` print, unchanged in shape;
`--query abi|manifest` prints one of them alone, so scripts written for the
elftool can switch by changing the command name.
"""

from __future__ import annotations

import enum
import shlex

import typer

from spt.commands._common import one_line_errors, print_json

MIB = 1 << 20


class Query(str, enum.Enum):
    abi = "abi"
    manifest = "manifest"


def min_mem_mib(kernel_end: int) -> int:
    """The smallest --mem the launcher accepts for an image: the image plus
    the scratch area the launch needs at the top of guest memory, rounded up
    to whole MiB (the same sum `spt.devices.core.check_mem_limits` makes)."""
    from spt.devices.core import min_mem_mib as core_min_mem_mib

    return core_min_mem_mib(kernel_end)


def attach_option(entry) -> str:
    """The solo5-spt option that attaches a manifest entry, from the device
    module that owns its type (the module says what its option looks like)."""
    from spt.devices import modules

    for module in modules():
        if module.TYPE == entry.type:
            opt = next(o for o in module.OPTIONS if o.required)
            return "--%s:%s=%s" % (opt.flag, entry.name, opt.metavar)
    return "(no device module takes type %s)" % entry.type_name


def shown(text: str) -> str:
    """`text` safe to print on a terminal: printable ASCII as it is, every
    other character (an escape sequence in a hostile manifest's device name,
    a control character in a file name) as a visible \\xHH or \\uHHHH."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if c.isascii() and c.isprintable() else
                   "\\x%02x" % ord(c) if ord(c) < 0x100 else "\\u%04x" % ord(c)
                   for c in text)


def shell_word(text: str) -> str:
    """`text` as one shell word that is safe to paste: single-quoted (no
    expansion of `$(...)`, `|`, `;`), and a word with bytes a terminal
    would act on as $'...' with \\xHH escapes (bash, zsh, ksh; POSIX sh
    since 2024)."""
    if text.isascii() and text.isprintable():
        return shlex.quote(text)
    import os

    return "$'%s'" % "".join(
        chr(b) if 0x20 <= b < 0x7F and chr(b) not in "'\\" else "\\x%02x" % b
        for b in os.fsencode(text))


def launch_line(doc: dict) -> str:
    """The solo5-spt command that launches the image, every word quoted
    and `--` before KERNEL (a kernel named `-k.spt` is not an option); or
    why there is none (a device name no command line can give)."""
    from spt.manifest import valid_name

    for index, dev in enumerate(doc["manifest"]["devices"], start=1):
        if not valid_name(dev["name"]):
            return "none: device %d's name %s is not a NAME solo5-spt takes" % (
                index, shown(dev["name"]) or "(empty)")
    words = ["solo5-spt", "--mem=%d" % doc["min_mem_mib"], *doc["attach"], "--", doc["kernel"]]
    return " ".join(shell_word(w) for w in words)


def abi_description(version: int) -> dict:
    """What spt knows of an spt ABI version: the Solo5 releases that build
    kernels of it, the loader rule spt applies to it, and the guest-side
    problems known of kernels of it."""
    from spt import abi

    info = abi.ABI_VERSIONS[version]
    known = []
    if info.yield_hang == "all":
        known.append("solo5_yield may hang in the guest (%s; guests built with Solo5 %s or "
                     "later are fixed, no tender can mend it)"
                     % (abi.YIELD_HANG_ISSUE, abi.YIELD_HANG_FIXED))
    elif info.yield_hang:
        known.append("if built with Solo5 v0.8.x, solo5_yield may hang in the guest (%s; "
                     "fixed in guests built with %s or later, no tender can mend it)"
                     % (abi.YIELD_HANG_ISSUE, abi.YIELD_HANG_FIXED))
    return {
        "version": version,
        "releases": info.releases,
        "loader": ("PT_LOADs without file contents are skipped" if info.skips_empty_load
                   else "every PT_LOAD is checked and mapped, bss-only ones included"),
        "known_issues": known,
    }


def describe(image) -> dict:
    """The image as plain JSON data."""
    from spt import arch

    return {
        "kernel": image.path,
        # The image passed the launcher's checks, so it is built for this host.
        "arch": arch.host().NAME,
        "abi": image.abi_json(),
        "abi_info": abi_description(image.abi_version),
        "manifest": image.manifest.to_json(),
        "entry": image.entry,
        "segments": [
            {"phdr": s.index, "vaddr": s.vaddr, "offset": s.offset, "filesz": s.filesz,
             "memsz": s.memsz, "start": s.start, "end": s.end, "perms": s.perms}
            for s in image.segments
        ],
        "kernel_end": image.kernel_end,
        "min_mem_mib": min_mem_mib(image.kernel_end),
        "attach": [attach_option(e) for e in image.manifest.devices],
    }


def render_text(doc: dict) -> str:
    abi = doc["abi"]
    lines = [
        "kernel      %s" % shown(doc["kernel"]),
        "arch        %s" % doc["arch"],
        "abi         %s, version %d (%s)" % (abi["target"], abi["version"],
                                             doc["abi_info"]["releases"]),
    ]
    lines += ["note        %s" % issue for issue in doc["abi_info"]["known_issues"]]
    lines += [
        "entry       %#x" % doc["entry"],
        "segments    %d to load:" % len(doc["segments"]),
    ]
    for s in doc["segments"]:
        lines.append("            phdr %d  %#x-%#x  %s  %d bytes from file offset %#x, %d in memory"
                     % (s["phdr"], s["start"], s["end"], s["perms"], s["filesz"], s["offset"],
                        s["memsz"]))
    lines += [
        "kernel_end  %#x" % doc["kernel_end"],
        "memory      --mem=%d MiB at least (image and launch scratch)" % doc["min_mem_mib"],
    ]
    devices = doc["manifest"]["devices"]
    if not devices:
        lines.append("devices     none")
    else:
        lines.append("devices     %d, every one must be attached:" % len(devices))
        width = max(len(shown(d["name"])) for d in devices)
        for index, (dev, option) in enumerate(zip(devices, doc["attach"]), start=1):
            lines.append("            %-3d %-*s  %-11s  %s" % (index, width, shown(dev["name"]),
                                                           dev["type"], shown(option)))
    lines.append("launch      %s" % launch_line(doc))
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command()
    @one_line_errors
    def inspect(
        kernel: str = typer.Argument(..., metavar="KERNEL", help="The unikernel (spt ABI-1 or ABI-2 ELF)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
        query: Query = typer.Option(None, "--query", metavar="abi|manifest",
                                    case_sensitive=False,
                                    help="Print only the solo5-elftool-shaped object: "
                                         "'abi' (query-abi) or 'manifest' (query-manifest)."),
    ) -> None:
        """Show a unikernel's ABI, devices, segments and the memory it needs.

        The image goes through the launcher's own checks: a file solo5-spt
        would refuse is refused here with the same message."""
        from spt import image as image_mod

        image = image_mod.load(kernel)
        if query is Query.abi:
            print_json(image.abi_json())
        elif query is Query.manifest:
            print_json(image.manifest.to_json())
        elif as_json:
            print_json(describe(image))
        else:
            typer.echo(render_text(describe(image)))
