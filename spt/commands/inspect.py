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


def describe(image) -> dict:
    """The image as plain JSON data."""
    return {
        "kernel": image.path,
        "abi": image.abi_json(),
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
        "kernel      %s" % doc["kernel"],
        "abi         %s, version %d" % (abi["target"], abi["version"]),
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
        width = max(len(d["name"]) for d in devices)
        for index, (dev, option) in enumerate(zip(devices, doc["attach"]), start=1):
            lines.append("            %-3d %-*s  %-11s  %s" % (index, width, dev["name"],
                                                           dev["type"], option))
    lines.append("launch      solo5-spt --mem=%d %s%s" % (
        doc["min_mem_mib"], "".join(o + " " for o in doc["attach"]), shlex.quote(doc["kernel"])))
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command()
    @one_line_errors
    def inspect(
        kernel: str = typer.Argument(..., metavar="KERNEL", help="The unikernel (spt ABI-2 ELF)."),
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
