"""spt-oci: the OCI runtime, called directly and under real engines.

Direct tests call spt-oci as an engine would (a private --root, bundles the
test writes, the test process as the subreaper that adopts the init);
slow ones run podman and containerd in mount namespaces of their own (see
oci_util). Every packet stays in namespaces the tests make.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import guest_path, run, stop, wait_for
from entrypoint_util import CONTAINER_IP, PEER_IP
from oci_util import (SPT_OCI, OciContainerd, OciPodman, Runtime, become_subreaper, bind, host_paths_naming,
                      host_state, wait_for_output, write_bundle)
from spt import netwire
from test_entrypoint import topology  # noqa: F401 - the fixture: namespaces and a veth


@pytest.fixture
def runtime(tmp_path):
    """spt-oci with a private root; the test process adopts the inits."""
    import prctl

    become_subreaper()
    rt = Runtime(tmp_path)
    try:
        yield rt
    finally:
        rt.close()
        prctl.set_child_subreaper(0)
        while True:  # orphans adopted meanwhile
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break


def one_error_line(proc, log, *fragments) -> str:
    """The error contract: status 1, one line `spt-oci: ...` on stderr (or
    the stdio file), exactly one JSON error object in --log."""
    assert proc.returncode == 1, proc.returncode
    entries = log.read_text().splitlines()
    assert len(entries) == 1, entries
    entry = json.loads(entries[0])
    assert entry["level"] == "error" and re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z$", entry["time"])
    msg = entry["msg"]
    assert not msg.startswith("spt-oci") and "\n" not in msg and "Traceback" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)
    return msg


def guest_fd_kinds(pid: int) -> list[str]:
    """What the guest's fds are, sorted: pipes and sockets by kind."""
    kinds = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        kinds.append(target.split(":")[0] if target.startswith(("pipe:", "socket:")) else target)
    return sorted(kinds)


def started(rt, container_id, bundle, *extra):
    proc, out, pid_file = rt.create(container_id, bundle, *extra)
    assert proc.returncode == 0, out.read_text()
    pid = rt.pid(pid_file)
    assert rt.call("start", container_id).returncode == 0
    return pid, out


# -- lifecycle ----------------------------------------------------------------

def test_create_waits_start_runs_the_guest_and_its_status_is_the_containers(runtime, tmp_path):
    bundle = write_bundle(tmp_path / "b", guest_path("hello"), ["hi there"],
                          annotations={"org.spt.mem": "16"}, new_netns=True)
    proc, out, pid_file = runtime.create("c1", bundle)
    assert proc.returncode == 0, out.read_text()
    # Digits only: containerd refuses a trailing newline.
    assert re.fullmatch(r"\d+", pid_file.read_text()), pid_file.read_text()
    pid = runtime.pid(pid_file)
    state = runtime.state("c1")
    assert state["status"] == "created" and state["pid"] == pid and state["id"] == "c1"
    assert state["bundle"] == str(bundle) and state["annotations"] == {"org.spt.mem": "16"}
    assert out.read_text() == ""  # nothing printed during create, the guest has not run
    # The init is PID 1 of a PID namespace of its own, and our child.
    status = open("/proc/%d/status" % pid).read()
    assert re.search(r"^NSpid:\s+%d\s+1$" % pid, status, re.M), status
    # New ipc, uts and network namespaces as the bundle asks; no copy of the
    # caller's mount table (it would pin every mount in it).
    ns = lambda who, kind: os.readlink("/proc/%s/ns/%s" % (who, kind))  # noqa: E731
    for kind in ("ipc", "uts", "net"):
        assert ns(pid, kind) != ns("self", kind), kind
    assert ns(pid, "mnt") == ns("self", "mnt")
    assert runtime.call("start", "c1").returncode == 0
    assert runtime.wait(pid) == 0
    assert "cmdline: 'hi there'" in out.read_text()
    assert runtime.state("c1")["status"] == "stopped"
    assert runtime.call("delete", "c1").returncode == 0
    assert runtime.call("state", "c1").returncode == 1


@pytest.mark.parametrize("code", [0, 3, 77])
def test_exit_status_of_the_guest_is_the_containers(runtime, tmp_path, code):
    bundle = write_bundle(tmp_path / "b", guest_path("exit"), [code],
                          annotations={"org.spt.mem": "8"})
    pid, _ = started(runtime, "c", bundle)
    assert runtime.wait(pid) == code


def test_the_running_guest_is_the_vanishing_tender(runtime, tmp_path):
    """Same pid as create reported, named after the kernel, no capability,
    seccomp, no_new_privs, only its own fds (not the fd the "shim" leaked
    into create), nothing of the runtime mapped."""
    leaked = tmp_path / "leaked-by-the-shim"
    leaked.write_text("")
    leak = os.open(leaked, os.O_RDONLY)
    try:
        bundle = write_bundle(tmp_path / "b", guest_path("sleep"), annotations={"org.spt.mem": "8"})
        proc, out, pid_file = runtime.create("c", bundle, pass_fds=(leak,))
        assert proc.returncode == 0, out.read_text()
    finally:
        os.close(leak)
    pid = runtime.pid(pid_file)
    # Waiting for start, the init already holds none of what create inherited.
    waiting = [os.readlink("/proc/%d/fd/%s" % (pid, fd)) for fd in os.listdir("/proc/%d/fd" % pid)]
    assert str(leaked) not in waiting, waiting
    assert runtime.call("start", "c").returncode == 0
    wait_for_output(out, "sleep: yielding")
    status = open("/proc/%d/status" % pid).read()
    assert "Name:\tspt:sleep.spt" in status, status
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert re.search(r"^%s:\s+0+$" % field, status, re.M), (field, status)
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M) and re.search(r"^Seccomp:\s+2$",
                                                                       status, re.M), status
    maps = open("/proc/%d/maps" % pid).read()
    assert "python" not in maps and ".so" not in maps, maps
    fds = sorted(int(fd) for fd in os.listdir("/proc/%d/fd" % pid))
    targets = [os.readlink("/proc/%d/fd/%d" % (pid, fd)) for fd in fds]
    # As under solo5-spt: the console (the container's stdout), epoll, timerfd.
    assert targets == [str(out), "anon_inode:[eventpoll]", "anon_inode:[timerfd]"], targets
    assert runtime.state("c")["status"] == "running"
    assert json.loads(runtime.call("ps", "--format", "json", "c").stdout) == [pid]


@pytest.mark.parametrize("user", [(0, 0), (4321, 4322)])
def test_the_guest_is_jailed_as_the_bundle_user_or_a_uid_of_its_own(runtime, tmp_path, user):
    """docs/security.md: a container guest gets the jail. A bundle that runs
    as root gets the per-guest ids of its host PID; one that names a user,
    that user. Its mount, IPC, UTS and network namespaces are new (the TAP
    fd, where there is one, was opened before)."""
    from spt import jail

    bundle = write_bundle(tmp_path / "b", guest_path("sleep"), annotations={"org.spt.mem": "8"},
                          user=user)
    proc, out, pid_file = runtime.create("c", bundle)
    assert proc.returncode == 0, out.read_text()
    pid = runtime.pid(pid_file)
    assert runtime.call("start", "c").returncode == 0
    wait_for_output(out, "sleep: yielding")
    status = open("/proc/%d/status" % pid).read()
    expected = jail.ids_for_pid(pid) if user == (0, 0) else user
    assert re.search(r"^Uid:\s+%d\s+%d\s+%d\s+%d$" % ((expected[0],) * 4), status, re.M), status
    assert re.search(r"^Gid:\s+%d\s+%d\s+%d\s+%d$" % ((expected[1],) * 4), status, re.M), status
    assert re.search(r"^Groups:\s*$", status, re.M), status
    for ns in ("mnt", "ipc", "uts", "net"):
        assert os.readlink("/proc/%d/ns/%s" % (pid, ns)) != os.readlink("/proc/self/ns/" + ns)
    assert os.listdir("/proc/%d/root/" % pid) == []  # the jail's empty root
    limits = open("/proc/%d/limits" % pid).read()
    assert re.search(r"^Max processes\s+0\s+0", limits, re.M), limits


@pytest.mark.parametrize("when", ["created", "running"])
def test_sigterm_ends_the_container_promptly(runtime, tmp_path, when):
    bundle = write_bundle(tmp_path / "b", guest_path("sleep"), annotations={"org.spt.mem": "8"})
    proc, out, pid_file = runtime.create("c", bundle)
    assert proc.returncode == 0, out.read_text()
    pid = runtime.pid(pid_file)
    if when == "running":
        assert runtime.call("start", "c").returncode == 0
        wait_for_output(out, "sleep: yielding")
    began = time.monotonic()
    assert runtime.call("kill", "c", "15").returncode == 0
    assert runtime.wait(pid) == 128 + signal.SIGTERM
    assert time.monotonic() - began < 10
    kill = runtime.call("kill", "c", "KILL")
    assert kill.returncode == 1 and "container not running" in kill.stderr


def test_pause_resume_and_kill_all(runtime, tmp_path):
    bundle = write_bundle(tmp_path / "b", guest_path("sleep"), annotations={"org.spt.mem": "8"})
    pid, out = started(runtime, "c", bundle)
    wait_for_output(out, "sleep: yielding")
    assert runtime.call("pause", "c").returncode == 0
    from conftest import wait_for

    wait_for(lambda: runtime.state("c")["status"] == "paused")
    assert runtime.call("resume", "c").returncode == 0
    wait_for(lambda: runtime.state("c")["status"] == "running")
    assert runtime.call("kill", "--all", "c", "9").returncode == 0
    assert runtime.wait(pid) == 128 + signal.SIGKILL


def test_delete_forgets_the_id_so_it_can_be_created_again(runtime, tmp_path):
    bundle = write_bundle(tmp_path / "b", guest_path("sleep"), annotations={"org.spt.mem": "8"})
    pid, _ = started(runtime, "same", bundle)
    refused = runtime.call("delete", "same")
    assert refused.returncode == 1 and "not stopped: running" in refused.stderr
    again, out, _ = runtime.create("same", bundle)
    assert again.returncode == 1 and "container with id same already exists" in out.read_text()
    assert runtime.call("delete", "--force", "same").returncode == 0
    assert runtime.wait(pid) == 128 + signal.SIGKILL
    assert os.listdir(runtime.root) == []
    pid, _ = started(runtime, "same", bundle)
    assert runtime.state("same")["pid"] == pid
    # A forced delete of an ID that is gone succeeds; a plain one does not.
    assert runtime.call("delete", "--force", "same").returncode == 0
    assert runtime.call("delete", "--force", "same").returncode == 0
    plain = runtime.call("delete", "same")
    assert plain.returncode == 1 and plain.stderr == "spt-oci: container same does not exist\n"


# -- devices from the bundle --------------------------------------------------

def test_block_file_mounted_at_spt_block_name(runtime, tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 8192)
    bundle = write_bundle(tmp_path / "b", guest_path("blockwriter"), ["seed=5"],
                          annotations={"org.spt.mem": "8"},
                          mounts=[bind(str(disk), "/spt/block/storage")])
    pid, out = started(runtime, "c", bundle)
    assert runtime.wait(pid) == 0, out.read_text()
    data = disk.read_bytes()
    for i in range(16):
        sector = data[i * 512:(i + 1) * 512]
        assert int.from_bytes(sector[:8], "little") == i and sector[8] == 5


def test_block_file_by_annotation_in_the_rootfs(runtime, tmp_path):
    bundle = write_bundle(tmp_path / "b", guest_path("block"),
                          annotations={"org.spt.mem": "8", "org.spt.block.storage": "/disk.img"})
    (bundle / "rootfs" / "disk.img").write_bytes(b"\0" * 4096)
    pid, out = started(runtime, "c", bundle)
    assert runtime.wait(pid) == 0, out.read_text()
    assert "block: roundtrip ok" in out.read_text()


def test_memory_from_the_limit_and_the_annotation(runtime, tmp_path):
    bundle = write_bundle(tmp_path / "b", guest_path("hello"), memory_limit=24 << 20)
    pid, out = started(runtime, "c", bundle)
    assert runtime.wait(pid) == 0, out.read_text()
    log = tmp_path / "log.json"
    bundle = write_bundle(tmp_path / "b2", guest_path("hello"), memory_limit=24 << 20,
                          annotations={"org.spt.mem": "32"})
    proc, _, _ = runtime.create("d", bundle, log=log)
    one_error_line(proc, log, "org.spt.mem=32 does not fit the container's memory limit of 24 MiB")


@pytest.mark.parametrize("make, fragments", [
    (lambda tmp: write_bundle(tmp / "b", guest_path("block")),
     ["block.spt declares what the bundle does not give", "block device 'storage'",
      "org.spt.block.storage=PATH", "/spt/block/storage"]),
    (lambda tmp: write_bundle(tmp / "b", guest_path("net")),
     ["shares the host's network namespace"]),
    (lambda tmp: write_bundle(tmp / "b", guest_path("net"), new_netns=True),
     ["no network interface besides lo"]),
    (lambda tmp: write_bundle(tmp / "b", guest_path("hello"), annotations={"org.spt.mem": "x"}),
     ["org.spt.mem='x': expected a number of MiB"]),
    (lambda tmp: write_bundle(tmp / "b", guest_path("hello"),
                              annotations={"com.urunc.unikernel.binary": "/unikernel/hello.spt",
                                           "com.urunc.unikernel.hypervisor": "hvt"}),
     ["com.urunc.unikernel.hypervisor is 'hvt'"]),
    (lambda tmp: write_bundle(tmp / "b", guest_path("hello"), memory_limit=4 << 20),
     ["leaves no memory for the guest"]),
])
def test_refused_create_is_one_line_and_leaves_nothing(runtime, tmp_path, make, fragments):
    bundle = make(tmp_path)
    log = tmp_path / "log.json"
    log.write_text('{"level":"error","msg":"an earlier failure"}\n')  # truncated first
    proc, out, pid_file = runtime.create("c", bundle, log=log)
    one_error_line(proc, log, *fragments)
    lines = out.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spt-oci: "), lines
    assert not pid_file.exists()
    assert not runtime.root.exists() or os.listdir(runtime.root) == []


def test_urunc_annotations_name_kernel_and_command_line(runtime, tmp_path):
    bundle = write_bundle(tmp_path / "b", guest_path("hello"), argv=["/not-the-kernel"],
                          annotations={"com.urunc.unikernel.binary": "/unikernel/hello.spt",
                                       "com.urunc.unikernel.cmdline": "from urunc",
                                       "com.urunc.unikernel.hypervisor": "spt",
                                       "org.spt.mem": "8"})
    pid, out = started(runtime, "c", bundle)
    assert runtime.wait(pid) == 0
    assert "cmdline: 'from urunc'" in out.read_text()


def test_urunc_block_annotation_is_the_kernels_one_block_device(runtime, tmp_path):
    bundle = write_bundle(tmp_path / "b", guest_path("block"),
                          annotations={"com.urunc.unikernel.block": "/disk.img",
                                       "org.spt.mem": "8"})
    (bundle / "rootfs" / "disk.img").write_bytes(b"\0" * 4096)
    pid, out = started(runtime, "c", bundle)
    assert runtime.wait(pid) == 0, out.read_text()
    assert "block: roundtrip ok" in out.read_text()


def test_kernel_symlink_cannot_leave_the_rootfs(runtime, tmp_path):
    """/unikernel/k -> /../../hello.spt resolves inside the rootfs: there is
    no kernel there, so it is not a unikernel (and goes to runc)."""
    from spt.oci import bundle as bundle_mod

    (tmp_path / "hello.spt").write_bytes(open(guest_path("hello"), "rb").read())
    b = write_bundle(tmp_path / "b", None, argv=["/unikernel/k"])
    os.symlink("/../../hello.spt", b / "rootfs" / "unikernel" / "k")
    found = bundle_mod.in_root(str(b / "rootfs"), "/unikernel/k")
    assert found == str(b / "rootfs" / "hello.spt")
    assert bundle_mod.kernel_path(bundle_mod.read(str(b))) is None


# -- the network of the container ---------------------------------------------

def test_guest_gets_the_container_netns_interface_and_answers_ping(runtime, tmp_path, topology):
    topo = topology(mtu=1400)
    bundle = write_bundle(tmp_path / "b", guest_path("net"), ["--exit-after=2"],
                          annotations={"org.spt.mem": "16"}, netns=topo.netns_path)
    pid, out = started(runtime, "c", bundle)
    text = wait_for_output(out, "net: ready")
    assert "net: ready mac=%s mtu=1400 ip=%s" % (topo.link("eth0")["address"], CONTAINER_IP) \
        in text, text
    assert "spt-oci: service0 gets eth0 (veth) %s/24" % CONTAINER_IP in text
    # The command line as spt entrypoint builds it: the template's flags
    # with the interface's facts, then the image's arguments.
    expected = ("--ipv4=%s/24 --ipv4-gateway=%s --exit-after=2" % (CONTAINER_IP, PEER_IP)).encode()
    with open("/proc/%d/mem" % pid, "rb") as mem:
        mem.seek(0x10000)
        assert expected + b"\0" in mem.read((16 << 20) - 0x10000)
    ping = topo.ping(2)
    assert ping.returncode == 0, ping.stdout
    assert runtime.wait(pid) == 0
    assert topo.link(netwire.TAP_NAME) is None


def test_args_template_annotation_gives_a_guest_its_own_flags(runtime, tmp_path, topology):
    topo = topology()
    bundle = write_bundle(tmp_path / "b", guest_path("net"), ["--exit-after=1"],
                          annotations={"org.spt.mem": "16",
                                       "org.spt.net.args-template": "--ipv4={ipv4}/{prefix} "
                                                                    "--x={mac},{mtu},{iface}"},
                          netns=topo.netns_path)
    pid, out = started(runtime, "c", bundle)
    wait_for_output(out, "net: ready")
    expected = ("--ipv4=%s/24 --x=%s,1500,eth0 --exit-after=1"
                % (CONTAINER_IP, topo.link("eth0")["address"])).encode()
    with open("/proc/%d/mem" % pid, "rb") as mem:
        mem.seek(0x10000)
        assert expected + b"\0" in mem.read((16 << 20) - 0x10000)
    assert topo.ping(1).returncode == 0
    assert runtime.wait(pid) == 0


def test_refused_net_create_undoes_the_wiring(runtime, tmp_path, topology):
    """A failure after the TAP is made (guest memory too small) leaves the
    container's namespace as it was."""
    topo = topology()
    before = topo.snapshot()
    bundle = write_bundle(tmp_path / "b", guest_path("net"), annotations={"org.spt.mem": "1"},
                          netns=topo.netns_path)
    log = tmp_path / "log.json"
    proc, _, _ = runtime.create("c", bundle, log=log)
    one_error_line(proc, log, "does not fit in guest memory")
    assert topo.snapshot() == before


# -- the command line ---------------------------------------------------------

def test_exec_is_refused_in_one_line(runtime, tmp_path):
    bundle = write_bundle(tmp_path / "b", guest_path("sleep"), annotations={"org.spt.mem": "8"})
    started(runtime, "c", bundle)
    log = tmp_path / "log.json"
    proc = runtime.call("exec", "--process", "/nonexistent", "--detach", "c", log=log)
    one_error_line(proc, log, "exec is not possible in container c: it is a unikernel")
    assert runtime.call("delete", "-f", "c").returncode == 0


@pytest.mark.parametrize("args, fragment", [
    (["create", "--bundle"], "create: --bundle needs a value"),
    (["create", "--frobnicate", "x"], "create: unknown flag --frobnicate"),
    (["kill", "nope", "SIGNOPE"], "kill: 'SIGNOPE' is not a signal"),
    (["start", "a/b"], "invalid container ID 'a/b'"),
    (["state", "missing"], "container missing does not exist"),
    (["--log-format", "xml", "state", "x"], "--log-format 'xml'"),
    (["frob"], "unknown command 'frob'"),
    ([], "no command given"),
])
def test_command_line_errors_are_one_line(runtime, args, fragment):
    proc = runtime.call(*args)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("spt-oci: "), proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr


def test_version_and_features():
    from conftest import run

    helped = run([SPT_OCI, "--help"])
    assert helped.returncode == 0 and helped.stdout.startswith("usage: spt-oci"), helped.stdout
    proc = run([SPT_OCI, "--version"])
    assert proc.returncode == 0 and proc.stdout.startswith("spt-oci version "), proc.stdout
    features = json.loads(run([SPT_OCI, "features"]).stdout)
    assert features["ociVersionMax"] == "1.0.2" and "network" in features["linux"]["namespaces"]


# -- podman --runtime spt-oci -------------------------------------------------

@pytest.fixture
def podman(tmp_path):
    before = host_state()
    pod = OciPodman(tmp_path / "podman")
    try:
        yield pod
    finally:
        pod.close()
    assert host_state() == before, "podman or spt-oci left state on the host"
    assert pod.ids and host_paths_naming(pod.ids) == []


def podman_run(pod, name, *args, detach=True):
    return pod.run(name, *args, detach=detach)


@pytest.mark.slow
def test_podman_runs_the_net_image_answers_ping_stops_promptly_and_restarts(topology, podman):
    topo = topology()
    image = podman.build(guest_path("net"), "net")
    name = podman.new_name()
    proc = podman_run(podman, name, "--network", "ns:" + topo.netns_path,
                      "--annotation", "org.spt.mem=16", image)
    assert proc.returncode == 0, proc.stderr
    for attempt in (1, 2):  # the second: `podman start` of the exited container, same ID
        podman.wait_for_log(name, "net: ready mac=%s" % topo.link("eth0")["address"])
        pid = podman.state(name)["Pid"]
        status = open("/proc/%d/status" % pid).read()
        assert "Name:\tspt:net.spt" in status and re.search(r"^CapEff:\s+0+$", status, re.M)
        assert re.search(r"^NSpid:\s+%d\s+1$" % pid, status, re.M), status
        assert guest_fd_kinds(pid) == ["/dev/net/tun", "anon_inode:[eventpoll]",
                                       "anon_inode:[timerfd]", "pipe"]
        ping = topo.ping(3)
        assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout
        began = time.monotonic()
        stopped = podman.podman("stop", "-t", "30", name)
        assert stopped.returncode == 0, stopped.stderr
        assert time.monotonic() - began < 10, "SIGTERM did not end the guest"
        assert podman.state(name)["ExitCode"] == 128 + signal.SIGTERM
        assert topo.link(netwire.TAP_NAME) is None
        if attempt == 1:
            again = podman.podman("start", name)
            assert again.returncode == 0, again.stderr
    assert podman.podman("rm", name).returncode == 0


@pytest.mark.slow
def test_podman_block_guest_writes_its_file_and_exit_status_is_podmans(podman, tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 8192)
    image = podman.build(guest_path("blockwriter"), "blockwriter")
    proc = podman_run(podman, podman.new_name(), "--rm", "-v", "%s:/spt/block/storage" % disk,
                      "--annotation", "org.spt.mem=8", image, "/unikernel/blockwriter.spt",
                      "seed=9", detach=False)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 15" in proc.stdout
    data = disk.read_bytes()
    assert all(int.from_bytes(data[i * 512:i * 512 + 8], "little") == i and data[i * 512 + 8] == 9
               for i in range(16))
    image = podman.build(guest_path("exit"), "exit")
    proc = podman_run(podman, podman.new_name(), "--rm", "--annotation", "org.spt.mem=8",
                      image, "/unikernel/exit.spt", "3", detach=False)
    assert proc.returncode == 3, proc.stderr


@pytest.mark.slow
def test_podman_shows_a_refused_create_in_one_line(podman):
    image = podman.build(guest_path("block"), "block")
    proc = podman_run(podman, podman.new_name(), "--rm", "--annotation", "org.spt.mem=8", image,
                      detach=False)
    assert proc.returncode == 126, (proc.returncode, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    assert errors == ["Error: OCI runtime error: spt-oci: block.spt declares what the "
                      "bundle does not give: block device 'storage' (annotation "
                      "org.spt.block.storage=PATH, or a file mounted at /spt/block/storage)"], \
        proc.stderr


@pytest.mark.slow
def test_podman_ordinary_container_goes_to_crun(podman):
    """Not a unikernel: the whole call goes to the host's crun (podman sent
    crun's --cgroup-manager flag), and later commands follow it."""
    import sys

    proc = podman_run(podman, podman.new_name(), "--rm", "-v",
                      "%s:%s:ro" % (sys.base_prefix, sys.base_prefix), "--rootfs", "/:O",
                      "sh", "-c", "echo ordinary; exit 5", detach=False)
    assert proc.returncode == 5, proc.stderr
    assert proc.stdout == "ordinary\n"
    name = podman.new_name()
    proc = podman_run(podman, name, "-v", "%s:%s:ro" % (sys.base_prefix, sys.base_prefix),
                      "--rootfs", "/:O", "sleep", "600")
    assert proc.returncode == 0, proc.stderr
    container_id = proc.stdout.strip()
    ls = run([*podman.prefix(), "ls", "/run/spt-oci", "/run/crun"])
    assert "spt-oci@" + container_id in ls.stdout and container_id in ls.stdout.split(), ls.stdout
    assert podman.podman("kill", name).returncode == 0  # SIGKILL, through crun
    from conftest import wait_for

    wait_for(lambda: podman.state(name)["Status"] == "exited", timeout=30)
    assert podman.state(name)["ExitCode"] == 128 + signal.SIGKILL
    assert podman.podman("rm", name).returncode == 0
    ls = run([*podman.prefix(), "ls", "-A", "/run/spt-oci"])
    assert ls.stdout == "", ls.stdout


# -- containerd: ctr run --runc-binary spt-oci ---------------------------------

@pytest.fixture
def containerd(tmp_path):
    before = host_state()
    daemon = OciContainerd(tmp_path / "containerd")
    try:
        yield daemon
    finally:
        daemon.close()
    assert host_state() == before, "containerd or spt-oci left state on the host"
    assert daemon.ids and host_paths_naming(daemon.ids) == []


def ctr_run(daemon, cid, image, *args, ctr_flags=()):
    """Foreground `ctr run --rm`: the Popen ends with the container."""
    return daemon.ctr_popen("run", "--rm", "--runc-binary", SPT_OCI, *ctr_flags, image, cid,
                            *args)


@pytest.mark.slow
def test_containerd_runs_the_net_image_answers_ping_stops_promptly_and_restarts(topology,
                                                                                containerd):
    topo = topology()
    image = containerd.import_image(guest_path("net"), "net")
    cid = containerd.new_id()
    for _ in (1, 2):  # the same ID again once the first run is gone
        proc = ctr_run(containerd, cid, image, "/unikernel/net.spt",
                       ctr_flags=("--with-ns", "network:" + topo.netns_path,
                                  "--annotation", "org.spt.mem=16"))
        try:
            line = wait_for(lambda: _ready_in(proc), timeout=30)
            assert "mac=%s" % topo.link("eth0")["address"] in line, line
            pids = json.loads(run([*containerd.prefix(), SPT_OCI, "--root",
                                   "/run/containerd/runc/" + containerd.NAMESPACE, "ps",
                                   "--format", "json", cid]).stdout)
            status = open("/proc/%d/status" % pids[0]).read()
            assert "Name:\tspt:net.spt" in status and re.search(r"^CapEff:\s+0+$", status, re.M)
            # Never the shim's sockets (its ttrpc listener reaches create as
            # fd 3): the console pipe, epoll, timerfd and the TAP only.
            assert guest_fd_kinds(pids[0]) == ["/dev/net/tun", "anon_inode:[eventpoll]",
                                               "anon_inode:[timerfd]", "pipe"]
            ping = topo.ping(3)
            assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout
            began = time.monotonic()
            assert containerd.ctr("task", "kill", cid).returncode == 0  # SIGTERM
            assert proc.wait(timeout=30) == 128 + signal.SIGTERM, proc.stderr.read()
            assert time.monotonic() - began < 10
        finally:
            stop(proc)
        wait_for(lambda: containerd.ctr("container", "info", cid).returncode != 0, timeout=30)
        assert topo.link(netwire.TAP_NAME) is None


def _ready_in(proc):
    from conftest import read_line

    line = read_line(proc.stdout, timeout=30)
    return line if line.startswith("net: ready") else None


@pytest.mark.slow
def test_containerd_block_guest_writes_its_file_and_exit_status_is_ctrs(containerd, tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 8192)
    image = containerd.import_image(guest_path("blockwriter"), "blockwriter")
    proc = ctr_run(containerd, containerd.new_id(), image, "/unikernel/blockwriter.spt", "seed=4",
                   ctr_flags=("--mount", "type=bind,src=%s,dst=/spt/block/storage,"
                              "options=rbind:rw" % disk, "--annotation", "org.spt.mem=8"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "wrote 15" in out
    data = disk.read_bytes()
    assert all(int.from_bytes(data[i * 512:i * 512 + 8], "little") == i and data[i * 512 + 8] == 4
               for i in range(16))
    image = containerd.import_image(guest_path("exit"), "exit")
    proc = ctr_run(containerd, containerd.new_id(), image, "/unikernel/exit.spt", "3",
                   ctr_flags=("--annotation", "org.spt.mem=8"))
    proc.communicate(timeout=60)
    assert proc.returncode == 3


@pytest.mark.slow
def test_containerd_shows_a_refused_create_in_one_line(containerd):
    image = containerd.import_image(guest_path("block"), "block")
    proc = ctr_run(containerd, containerd.new_id(), image, ctr_flags=("--annotation",
                                                                      "org.spt.mem=8"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert err == ("ctr: failed to create shim task: OCI runtime create failed: block.spt "
                   "declares what the bundle does not give: block device 'storage' (annotation "
                   "org.spt.block.storage=PATH, or a file mounted at /spt/block/storage): "
                   "unknown\n"), err


# -- the entrypoint's image recipe ---------------------------------------------

def _make_rootfs():
    import importlib.util
    from importlib.machinery import SourceFileLoader

    from conftest import ROOT

    loader = SourceFileLoader("make_rootfs", str(ROOT / "contrib" / "container" / "make-rootfs"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def test_entrypoint_image_default_command_names_the_kernel_it_was_built_with():
    recipe = _make_rootfs().containerfile("blockwriter.spt", 32, None)
    lines = recipe.splitlines()
    assert 'CMD ["--mem=32", "/unikernel/blockwriter.spt"]' in lines, recipe
    assert 'ENTRYPOINT ["/opt/spt/bin/spt", "entrypoint"]' in lines, recipe
    assert "FROM scratch" in lines and "STOPSIGNAL SIGTERM" in lines


def test_entrypoint_image_carries_the_guests_own_network_flags():
    """A guest that is not MirageOS gets the flags its image was built with
    (or none), not MirageOS's."""
    recipe = _make_rootfs().containerfile("net.spt", 64, "--ip={ipv4}/{prefix}")
    assert ('ENTRYPOINT ["/opt/spt/bin/spt", "entrypoint", "--args-template", '
            '"--ip={ipv4}/{prefix}"]') in recipe.splitlines(), recipe
    recipe = _make_rootfs().containerfile("net.spt", 64, "")
    assert 'ENTRYPOINT ["/opt/spt/bin/spt", "entrypoint", "--args-template", ""]' in recipe


def test_make_rootfs_refuses_a_bad_mem_in_one_line(tmp_path):
    import sys

    from conftest import ROOT

    proc = run([sys.executable, str(ROOT / "contrib" / "container" / "make-rootfs"), "--mem=x",
                guest_path("net"), str(tmp_path / "ctx")])
    assert proc.returncode == 1 and proc.stderr == \
        "make-rootfs: --mem=x: expected a number of MiB\n", proc.stderr


# -- cgroups --------------------------------------------------------------------

CGROUP2_VIEW = ["unshare", "-m", "sh", "-c",
                "mount --make-rprivate / && umount -l /sys/fs/cgroup && "
                "mount -t cgroup2 none /sys/fs/cgroup && exec \"$@\"", "sh"]


@pytest.mark.parametrize("systemd", [False, True])
def test_cgroups_path_is_honoured_on_cgroup2_and_removed_by_delete(runtime, tmp_path, systemd):
    """Every call in a view with cgroup2 on /sys/fs/cgroup (this machine's
    host is hybrid, where the guest stays in the caller's cgroup)."""
    import uuid

    tag = uuid.uuid4().hex[:8]
    if systemd:
        path, expected = "spt-test.slice:spt:%s" % tag, "/spt.slice/spt-test.slice/spt-%s.scope" % tag
    else:
        path, expected = "/spt-oci-test-%s" % tag, "/spt-oci-test-%s" % tag
    bundle = write_bundle(tmp_path / "b", guest_path("sleep"), annotations={"org.spt.mem": "8"},
                          extra_linux={"cgroupsPath": path})
    glob = ["--root", str(runtime.root)] + (["--systemd-cgroup"] if systemd else [])
    out = tmp_path / "out"
    with open(out, "w") as stdio:
        proc = subprocess.run([*CGROUP2_VIEW, SPT_OCI, *glob, "create", "--bundle", str(bundle),
                               "--pid-file", str(tmp_path / "pid"), "c"], stdin=subprocess.DEVNULL,
                              stdout=stdio, stderr=stdio, timeout=60)
    assert proc.returncode == 0, out.read_text()
    pid = int((tmp_path / "pid").read_text())
    runtime.pids.append(pid)
    assert "0::%s\n" % expected in open("/proc/%d/cgroup" % pid).read()
    check = run([*CGROUP2_VIEW, "test", "-d", "/sys/fs/cgroup" + expected])
    assert check.returncode == 0
    deleted = run([*CGROUP2_VIEW, SPT_OCI, *glob, "delete", "--force", "c"])
    assert deleted.returncode == 0, deleted.stderr
    assert runtime.wait(pid) == 128 + signal.SIGKILL
    assert run([*CGROUP2_VIEW, "test", "-e", "/sys/fs/cgroup" + expected]).returncode == 1
    if systemd:  # the slices stay, as systemd's would; the test removes its own
        run([*CGROUP2_VIEW, "rmdir", "/sys/fs/cgroup/spt.slice/spt-test.slice",
             "/sys/fs/cgroup/spt.slice"])


def test_systemd_cgroups_path_names():
    from spt.oci import cgroup
    from spt.oci.errors import OciError

    assert cgroup.systemd_path("machine.slice:libpod:abc") == "machine.slice/libpod-abc.scope"
    assert cgroup.systemd_path("system.slice:ctr:c4") == "system.slice/ctr-c4.scope"
    assert cgroup.systemd_path("kubepods-besteffort-pod1.slice:cri-containerd:x") == \
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/" \
        "cri-containerd-x.scope"
    for bad in ("/default/c4", "a:b", "x.scope:p:n"):
        with pytest.raises(OciError):
            cgroup.systemd_path(bad)


# -- a terminal -------------------------------------------------------------------

def test_terminal_master_goes_to_the_console_socket(runtime, tmp_path):
    """process.terminal: the guest's console is a new pty whose master
    reaches the engine over --console-socket in one SCM_RIGHTS message."""
    import select
    import socket

    path = tmp_path / "console.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    bundle = write_bundle(tmp_path / "b", guest_path("hello"), ["on a tty"], terminal=True,
                          annotations={"org.spt.mem": "8"})
    try:
        proc, out, pid_file = runtime.create("c", bundle, "--console-socket", path)
        assert proc.returncode == 0, out.read_text()
        conn, _ = listener.accept()
        with conn:
            message, fds, _, _ = socket.recv_fds(conn, 64, 1)
        assert message == b"/dev/ptmx" and len(fds) == 1
        master = fds[0]
        try:
            assert runtime.call("start", "c").returncode == 0
            seen = b""
            deadline = time.monotonic() + 20
            while b"cmdline: 'on a tty'" not in seen and time.monotonic() < deadline:
                if select.select([master], [], [], 1)[0]:
                    try:
                        seen += os.read(master, 4096)
                    except OSError:  # EIO: the guest is gone
                        break
            assert b"cmdline: 'on a tty'" in seen, seen
            assert runtime.wait(runtime.pid(pid_file)) == 0
        finally:
            os.close(master)
        assert out.read_text() == ""  # nothing went to create's own stdio
    finally:
        listener.close()
    log = tmp_path / "log.json"
    proc, _, _ = runtime.create("d", bundle, log=log)
    one_error_line(proc, log, "process.terminal is set but no --console-socket was given")


@pytest.mark.slow
def test_containerd_ordinary_container_goes_to_runc(containerd):
    """Not a unikernel (a static ordinary program): the whole call goes to
    the host's runc, which containerd's shim speaks; later commands follow."""
    image = containerd.import_image("/sbin/ldconfig", "ordinary")
    cid = containerd.new_id()
    proc = ctr_run(containerd, cid, image, "/unikernel/ldconfig", "--version")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.startswith("ldconfig"), out
    # Detached: the exited task stays until `task delete`; runc's record and
    # spt-oci's (which sends every later call to runc) live side by side.
    root = "/run/containerd/runc/" + containerd.NAMESPACE
    cid = containerd.new_id()
    ran = containerd.ctr("run", "-d", "--runc-binary", SPT_OCI, image, cid, "/unikernel/ldconfig",
                         "--version")
    assert ran.returncode == 0, ran.stderr
    wait_for(lambda: "STOPPED" in containerd.ctr("task", "ls").stdout, timeout=30)
    ls = run([*containerd.prefix(), "ls", "-A", root])
    assert sorted(ls.stdout.split()) == [cid, "spt-oci@" + cid], ls.stdout
    assert containerd.ctr("task", "delete", cid).returncode == 0
    ls = run([*containerd.prefix(), "ls", "-A", root])
    assert ls.stdout == "", ls.stdout


@pytest.mark.parametrize("damage", ["no state file", "not JSON"])
def test_delete_force_clears_a_damaged_record(runtime, tmp_path, damage):
    from spt.oci.state import DIR_PREFIX, STATE_FILE

    record = runtime.root / (DIR_PREFIX + "c")
    record.mkdir(parents=True)
    if damage == "not JSON":
        (record / STATE_FILE).write_text("{half")
        state = runtime.call("state", "c")
        assert state.returncode == 1 and "is damaged (delete --force c removes it)" in state.stderr
    bundle = write_bundle(tmp_path / "b", guest_path("hello"), annotations={"org.spt.mem": "8"})
    proc, out, _ = runtime.create("c", bundle)
    refusal = ("container with id c already exists" if damage == "no state file"
               else "state.json is damaged (delete --force c removes it)")
    assert proc.returncode == 1 and refusal in out.read_text(), out.read_text()
    assert runtime.call("delete", "--force", "c").returncode == 0
    assert not record.exists()
    pid, _ = started(runtime, "c", bundle)
    assert runtime.wait(pid) == 0


def test_preserved_fds_are_accepted_and_the_guest_gets_only_its_own(runtime, tmp_path):
    """--preserve-fds N (podman's --preserve-fds): fds 3.. are the
    container's to keep, but a unikernel has no use for them: the guest
    holds its console and devices only."""
    preserved = tmp_path / "preserved"
    preserved.write_text("")
    bundle = write_bundle(tmp_path / "b", guest_path("sleep"), annotations={"org.spt.mem": "8"})
    out = tmp_path / "out"
    with open(out, "w") as stdio:
        proc = subprocess.run(["sh", "-c", 'exec 3<"$0"; exec "$@"', str(preserved), SPT_OCI,
                               "--root", str(runtime.root), "create", "--bundle", str(bundle),
                               "--pid-file", str(tmp_path / "pid"), "--preserve-fds", "1", "c"],
                              stdin=subprocess.DEVNULL, stdout=stdio, stderr=stdio, timeout=60)
    assert proc.returncode == 0, out.read_text()
    pid = int((tmp_path / "pid").read_text())
    runtime.pids.append(pid)
    assert runtime.call("start", "c").returncode == 0
    wait_for_output(out, "sleep: yielding")
    targets = [os.readlink("/proc/%d/fd/%s" % (pid, fd)) for fd in os.listdir("/proc/%d/fd" % pid)]
    assert str(preserved) not in targets and str(out) in targets, targets
    bad = runtime.call("create", "--preserve-fds", "x", "--bundle", bundle, "d")
    assert bad.returncode == 1 and "--preserve-fds 'x': expected a number" in bad.stderr
