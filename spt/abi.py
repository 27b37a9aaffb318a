"""Constants of the Solo5 spt ABI, versions 1 and 2 (see docs/abi.md).

One home for every number the guest and the tender must agree on; names follow
the interface's own terms.
"""

from spt.lean import Record

# ELF notes (spt-abi §1.1)
NOTE_NAME = b"Solo5\x00"
NOTE_HEADER_SIZE = 20  # namesz, descsz, type, "Solo5\0" padded to 8

ABI1_NOTE_TYPE = 0x31494241  # "ABI1"
ABI1_NOTE_ALIGN = 4
ABI1_NOTE_MAX_DESCSZ = 32

MFT1_NOTE_TYPE = 0x3154464D  # "MFT1"
MFT1_NOTE_ALIGN = 8
MFT1_NOTE_MAX_DESCSZ = 6668

ABI_TARGETS = {1: "hvt", 2: "spt", 3: "virtio", 4: "muen", 5: "genode", 6: "xen"}
ABI_TARGET_SPT = 2
ABI_VERSION = 2  # the newest; what spt's own tools describe by default


class AbiVersion(Record, fields="version releases skips_empty_load yield_hang"):
    """One spt ABI version as Solo5 released it: `releases` that build
    kernels of it, whether its loader skips a PT_LOAD with p_filesz == 0,
    and whether kernels of it may carry the guest-side solo5_yield hang
    (Solo5 #582: every guest built before v0.9.0; "some" when only part of
    the releases of the version are affected)."""

    __slots__ = ()


# Both versions share the boot info, the manifest (version 1, <= 64 entries),
# both note layouts and the allow-list; the one tender-side change of v0.8.0
# is the loader's: it skips PT_LOADs without file contents (ABI 2 kernels
# gained a PT_TLS, a read-only TLS-data PT_LOAD and a bss-only PT_LOAD). The
# bump was made so that mismatched tenders and kernels refuse each other; spt
# runs each by the rules of its own release.
ABI_VERSIONS = {
    1: AbiVersion(1, "Solo5 v0.6.0 to v0.7.5", skips_empty_load=False, yield_hang="all"),
    2: AbiVersion(2, "Solo5 v0.8.0 and later", skips_empty_load=True,
                  yield_hang="v0.8.x builds"),
}
YIELD_HANG_ISSUE = "Solo5 #582"
YIELD_HANG_FIXED = "v0.9.0"

# The manifest (spt-abi §1.2)
MFT_VERSION = 1
MFT_MAX_ENTRIES = 64
MFT_NAME_SIZE = 68
MFT_NAME_MAX = MFT_NAME_SIZE - 1
MFT_HEADER_SIZE = 8
MFT_ENTRY_SIZE = 104

MFT_DEV_BLOCK_BASIC = 1
MFT_DEV_NET_BASIC = 2
MFT_RESERVED_FIRST = 0x40000000
MFT_TYPE_NAMES = {
    MFT_DEV_BLOCK_BASIC: "BLOCK_BASIC",
    MFT_DEV_NET_BASIC: "NET_BASIC",
    MFT_RESERVED_FIRST: "RESERVED_FIRST",
}

# Memory (spt-abi §2, §3)
PAGE_SIZE = 4096
GUEST_MIN_ADDR = 0x100000  # images are linked at or above 1 MiB
GUEST_MEM_START = 0x10000  # [0, 64 KiB) stays unmapped: NULL faults
BOOT_INFO_ADDR = 0x11000
BOOT_INFO_SIZE = 40
CMDLINE_SIZE = 8192  # including the terminating NUL
DEFAULT_MEM_MIB = 512

# Yield (spt-abi §4): the timerfd's epoll data; net devices use their index.
TIMER_EPOLL_DATA = 0xFFFFFFFE

BLOCK_DEFAULT_SECTOR = 512
