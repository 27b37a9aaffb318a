"""Hostile images: a mutation fuzzer over the kit's guests.

Every mutated image must end in one of two ways: a running guest, or exit
status 1 with one line on stderr starting `solo5-spt: ` - never a
traceback, a hang, or the launcher killed by a signal before the guest
started. Beyond "no crash", the loader's every decision is compared with a
reference written from spt-abi §1-§2 (tests/fuzzing.py): an image the ABI
says to refuse must be refused, and an accepted image must load exactly the
segments, entry and devices the ABI says.

Two slices, both seeded (the seed is printed first; see conftest.py):
- in-process: `spt.image.load` + `check_fits` on each mutated file, where all
  parsing happens (~1 ms a case, so thousands run in seconds);
- through the real `solo5-spt` (a smaller sample, 1 in 20): devices, BPF,
  plan, trampoline; READY=1 on an sd_notify socket tells "the guest was
  started" apart from "the launcher or trampoline died first".
"""

from __future__ import annotations

import collections
import os
import queue
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import fuzzing
import pytest
from conftest import guest_path, progress_note
from hostile_util import NotifySocket, TapNamespace, launch_env, record_figures, solo5_spt

from spt import image
from spt.errors import SptError

# Guests with no devices, block, net, both, and the most devices allowed.
FUZZ_GUESTS = ("hello", "exit", "block", "net", "syscall_dev", "maxdev")
MEM_SIZES = (4 << 20, 32 << 20, 512 << 20)
CASE_TIMEOUT = 60  # seconds before a launch that neither starts nor exits is a hang
RUNNING_GRACE = 0.3  # a started guest still running after this is stopped: "running"
MAX_REPORTED = 20


def originals() -> dict[str, bytes]:
    return {name: Path(guest_path(name)).read_bytes() for name in FUZZ_GUESTS}


def fd_numbers() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


def loader_verdict(path: Path, mem_size: int) -> fuzzing.Verdict:
    """What spt's loader decides; SptError is a refusal, any other exception
    escapes (and fails the test: it would be a crash of the launcher)."""
    try:
        img = image.load(str(path))
        image.check_fits(img, mem_size)
    except SptError as exc:
        return fuzzing.Verdict(False, str(exc))
    return fuzzing.loader_view(img)


def judge(case, seed, path: Path, mem_size: int) -> tuple[str, str | None]:
    """(outcome, failure or None) of one in-process case."""
    label = case.label(seed)
    reference = fuzzing.spec_verdict(case.data, mem_size)
    try:
        got = loader_verdict(path, mem_size)
    except Exception as exc:  # noqa: BLE001 - the point of the test
        return "crash", "%s: %s: %s" % (label, type(exc).__name__, exc)
    if not got.ok:
        message = got.why
        if not message or "\n" in message or not message.startswith(str(path)):
            return "refused", "%s: refusal is not one line naming the file: %r" % (label, message)
        if reference.ok:
            return "refused", "%s: spec accepts, loader refuses: %s" % (label, message)
        return "refused", None
    if not reference.ok:
        return "accepted", "%s: spec refuses (%s), loader accepts" % (label, reference.why)
    if got != reference:
        return "accepted", "%s: loader loads %s, spec says %s" % (label, got, reference)
    return "accepted", None


def test_loader_matches_the_abi_on_mutated_images(fuzz_config, tmp_path, request):
    seed, total = fuzz_config.seed, fuzz_config.cases
    progress_note(request, "fuzz: in-process seed=%s cases=%d (replay: --fuzz-seed=%s)"
                  % (seed, total, seed))
    guests = originals()
    path = tmp_path / "case.spt"
    fds_before = fd_numbers()
    outcomes, failures = collections.Counter(), []
    started = time.monotonic()
    for index in range(total):
        name = FUZZ_GUESTS[index % len(FUZZ_GUESTS)]
        case = fuzzing.make_case(seed, name, guests[name], index)
        path.write_bytes(case.data)
        mem_size = MEM_SIZES[index % len(MEM_SIZES)]
        outcome, failure = judge(case, seed, path, mem_size)
        outcomes[outcome] += 1
        if failure:
            failures.append(failure)
            if len(failures) >= MAX_REPORTED:
                break
    elapsed = time.monotonic() - started
    record_figures(request.config, "fuzz-in-process", {
        "seed": seed, "cases": sum(outcomes.values()), "outcomes": dict(outcomes),
        "guests": list(FUZZ_GUESTS), "seconds": round(elapsed, 1), "failures": len(failures)})
    assert not failures, "fuzz seed=%s:\n%s" % (seed, "\n".join(failures))
    assert fd_numbers() == fds_before, "the loader leaked file descriptors"
    # The fuzzer must reach both sides, or it tests nothing.
    assert outcomes["accepted"] > total // 20 and outcomes["refused"] > total // 2, outcomes


# --- through the real launcher ------------------------------------------------

class CliGuest(NamedTuple):
    args: tuple[str, ...] = ()
    block: bool = False
    net: bool = False


CLI_GUESTS = {
    "exit": CliGuest(args=("0",)),
    "hello": CliGuest(args=("fuzz",)),
    "block": CliGuest(block=True),
    "net": CliGuest(net=True),
}
CLI_WORKERS = 3


class Slot(NamedTuple):
    """What one worker owns, so parallel cases never share a TAP or a lock."""
    block: str
    tap: str
    guest_ip: str  # the net guest's address on that TAP


class CliResult(NamedTuple):
    outcome: str  # refused | started | running | failed
    failure: str | None


def run_cli_case(case, seed, mem_mib: int, slot: Slot, ns: TapNamespace, work: Path) -> CliResult:
    label = case.label(seed)
    spec = CLI_GUESTS[case.guest]
    kernel = work / ("c%d.spt" % case.index)
    kernel.write_bytes(case.data)
    argv = ["--mem=%d" % mem_mib]
    if spec.block:
        argv.append("--block:storage=%s" % slot.block)
    args = list(spec.args)
    if spec.net:
        argv.append("--net:service0=%s" % slot.tap)
        args.append("--ipv4=%s/24" % slot.guest_ip)
    notify = NotifySocket(work)
    out_path, err_path = work / ("c%d.out" % case.index), work / ("c%d.err" % case.index)
    env = launch_env(NOTIFY_SOCKET=notify.path, SPT_CACHE_DIR=str(work / "cache"))
    proc = None
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(ns.wrap(solo5_spt(*argv, kernel, *args)),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        rc, started_at, deadline = None, None, time.monotonic() + CASE_TIMEOUT
        while rc is None:
            if notify.drain(0.02) and started_at is None:
                started_at = time.monotonic()
            rc = proc.poll()
            now = time.monotonic()
            if rc is None and started_at is not None and now - started_at > RUNNING_GRACE:
                proc.kill()
                proc.wait()
                return CliResult("running", None)
            if rc is None and now > deadline:
                proc.kill()
                proc.wait()
                return CliResult("failed", "%s: hang: neither started nor exited in %ds"
                                 % (label, CASE_TIMEOUT))
        if notify.drain(0):
            return CliResult("started", None)
    finally:
        notify.close()
        if proc is not None and proc.poll() is None:  # only if this code itself failed
            proc.kill()
            proc.wait()
    stdout, stderr = out_path.read_bytes(), err_path.read_text(errors="replace")
    lines = stderr.splitlines()
    if rc < 0:
        return CliResult("failed", "%s: launcher killed by signal %d before the guest started; "
                         "stderr=%r" % (label, -rc, stderr))
    if (rc != 1 or len(lines) != 1 or not lines[0].startswith("solo5-spt: ") or stdout
            or "internal error" in stderr or "Traceback" in stderr):
        return CliResult("failed", "%s: not a clean refusal: rc=%d stderr=%r stdout=%r"
                         % (label, rc, stderr, stdout[:200]))
    reference = fuzzing.spec_verdict(case.data, mem_mib << 20)
    if (reference.ok and not spec.block and not spec.net and not reference.devices
            and reference.kernel_end + (1 << 20) <= mem_mib << 20):
        return CliResult("failed", "%s: spec accepts, launcher refuses: %s" % (label, lines[0]))
    return CliResult("refused", None)


def check_started_against_spec(case, seed, mem_mib: int, result: CliResult) -> str | None:
    if result.outcome in ("started", "running"):
        reference = fuzzing.spec_verdict(case.data, mem_mib << 20)
        if not reference.ok:
            return "%s: spec refuses (%s), yet the guest started" % (case.label(seed),
                                                                       reference.why)
    return None


@pytest.fixture
def fuzz_taps():
    ns = TapNamespace(CLI_WORKERS, prefix="spt-fz")
    yield ns
    ns.close()


def test_launcher_ends_every_mutated_image_cleanly(fuzz_config, fuzz_taps, tmp_path, request):
    seed = fuzz_config.seed + "/cli"
    total = fuzz_config.cli_cases
    progress_note(request, "fuzz: solo5-spt seed=%s cases=%d" % (fuzz_config.seed, total))
    guests = {name: Path(guest_path(name)).read_bytes() for name in CLI_GUESTS}
    names = sorted(CLI_GUESTS)
    slots: queue.Queue[Slot] = queue.Queue()
    for k in range(CLI_WORKERS):
        block = tmp_path / ("slot%d.img" % k)
        block.write_bytes(bytes(64 * 1024))
        slots.put(Slot(str(block), fuzz_taps.taps[k], "10.78.%d.2" % k))

    def one(index: int):
        name = names[index % len(names)]
        case = fuzzing.make_case(seed, name, guests[name], index)
        mem_mib = (4, 32, 512)[index % 3]
        slot = slots.get()
        try:
            result = run_cli_case(case, seed, mem_mib, slot, fuzz_taps, tmp_path)
        finally:
            slots.put(slot)
        return result, check_started_against_spec(case, seed, mem_mib, result)

    started = time.monotonic()
    with ThreadPoolExecutor(CLI_WORKERS) as pool:
        results = list(pool.map(one, range(total)))
    elapsed = time.monotonic() - started
    outcomes = collections.Counter(r.outcome for r, _ in results)
    failures = [f for r, extra in results for f in (r.failure, extra) if f]
    record_figures(request.config, "fuzz-cli", {
        "seed": fuzz_config.seed, "cases": total, "outcomes": dict(outcomes),
        "guests": names, "seconds": round(elapsed, 1), "failures": len(failures)})
    assert not failures, "fuzz seed=%s (cases kept in %s):\n%s" % (
        fuzz_config.seed, tmp_path, "\n".join(failures[:MAX_REPORTED]))
    assert outcomes["refused"] and outcomes["started"] + outcomes["running"], outcomes
