"""Bundles, runtime calls and engines for spt-oci's tests.

`Runtime` calls `spt-oci` directly with a private `--root` (never the
host's /run) and plays the engine's part: the test process is a child
subreaper (as conmon and containerd's shim are), so the init that create
leaves behind is reparented to it and its exit status can be read with
waitpid. create's stdio are files, as the container's stdio (a pipe would
be held open by the guest).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from conftest import BIN, run, wait_for
from entrypoint_util import PodmanNs

SPT_OCI = str(BIN / "spt-oci")
KERNEL_DIR = "/unikernel"


def write_bundle(path: Path, kernel: str | None, args=(), *, annotations=None, netns=None,
                 new_netns: bool = False, mounts=(), memory_limit=None, terminal=False,
                 argv=None, extra_linux=None, user=(0, 0)) -> Path:
    """A bundle as an engine writes one: rootfs/unikernel/KERNEL, config.json
    with process.args = [/unikernel/KERNEL, *args] (or `argv`)."""
    rootfs = path / "rootfs"
    (rootfs / KERNEL_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
    if kernel is not None:
        shutil.copy(kernel, rootfs / KERNEL_DIR.lstrip("/") / os.path.basename(kernel))
        argv = argv or [KERNEL_DIR + "/" + os.path.basename(kernel), *map(str, args)]
    namespaces = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
    if netns is not None:
        namespaces.append({"type": "network", "path": netns})
    elif new_netns:
        namespaces.append({"type": "network"})
    linux = {"namespaces": namespaces, **(extra_linux or {})}
    if memory_limit is not None:
        linux["resources"] = {"memory": {"limit": memory_limit}}
    config = {"ociVersion": "1.0.2",
              "process": {"args": list(argv or []), "cwd": "/", "terminal": terminal,
                          "env": ["PATH=/bin"], "user": {"uid": user[0], "gid": user[1]}},
              "root": {"path": "rootfs"}, "mounts": list(mounts),
              "annotations": dict(annotations or {}), "linux": linux}
    (path / "config.json").write_text(json.dumps(config))
    return path


def bind(source: str, destination: str) -> dict:
    return {"destination": destination, "type": "bind", "source": source,
            "options": ["rbind", "rw"]}


class Runtime:
    """spt-oci with one private root; each create gets its own stdio file."""

    def __init__(self, tmp: Path):
        self.root = tmp / "oci-root"
        self.tmp = tmp
        self.pids: list[int] = []

    def call(self, *args, log: Path | None = None, timeout: float = 30):
        glob = ["--root", str(self.root)]
        if log is not None:
            glob += ["--log", str(log), "--log-format", "json"]
        return run([SPT_OCI, *glob, *map(str, args)], timeout=timeout)

    def create(self, container_id: str, bundle: Path, *extra, log: Path | None = None,
               pass_fds=()):
        """create with stdio = a file (the container's output); returns
        (CompletedProcess-like, output path)."""
        out = self.tmp / ("%s-%s.out" % (container_id, uuid.uuid4().hex[:6]))
        glob = ["--root", str(self.root)]
        if log is not None:
            glob += ["--log", str(log), "--log-format", "json"]
        pid_file = self.tmp / ("%s.pid" % container_id)
        with open(out, "w+") as stdio:
            proc = subprocess.run([SPT_OCI, *glob, "create", "--bundle", str(bundle),
                                   "--pid-file", str(pid_file), *map(str, extra), container_id],
                                  stdin=subprocess.DEVNULL, stdout=stdio, stderr=stdio,
                                  timeout=60, pass_fds=pass_fds)
        if proc.returncode == 0:
            self.pids.append(int(pid_file.read_text()))
        return proc, out, pid_file

    def pid(self, pid_file: Path) -> int:
        return int(pid_file.read_text())

    def state(self, container_id: str) -> dict:
        proc = self.call("state", container_id)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def wait(self, pid: int, timeout: float = 20) -> int:
        """The exit status of an init reparented to this process."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                self.pids.remove(pid)
                return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) \
                    else 128 + os.WTERMSIG(status)
            time.sleep(0.02)
        raise AssertionError("pid %d did not end within %.0fs" % (pid, timeout))

    def close(self) -> None:
        """Kill what is left (by the pids create reported) and reap it."""
        import signal

        for pid in list(self.pids):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass


def become_subreaper() -> None:
    import prctl

    prctl.set_child_subreaper(1)


def wait_for_output(path: Path, text: str, timeout: float = 20) -> str:
    def seen():
        content = path.read_text(errors="replace")
        return content if text in content else None
    return wait_for(seen, timeout=timeout, interval=0.05)


# -- engines in mount namespaces of their own ---------------------------------

# Where an engine or runtime could leave state on the host. Other test
# runs on this machine may use the host's podman meanwhile, so what is
# compared is (a) what only spt-oci's tests make (/run/spt-oci) and the
# engines' configuration directories, whole, and (b) that no path anywhere
# in these trees names a container the test ran.
OWN_STATE_PATHS = ("/run/spt-oci", "/etc/containers", "/etc/containerd", "/etc/cni")
ENGINE_STATE_PATHS = ("/run/containers", "/run/libpod", "/run/crun", "/run/runc",
                      "/run/containerd", "/var/lib/containers", "/var/lib/containerd",
                      "/var/lib/cni", "/tmp/containerd")


def _listing(top: str):
    if not os.path.lexists(top):
        return None
    names = []
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(directory, name)
            try:
                size = -1 if os.path.isdir(path) else os.lstat(path).st_size
            except FileNotFoundError:
                continue
            names.append((os.path.relpath(path, top), size))
    return sorted(names)


def host_state() -> dict:
    return {top: _listing(top) for top in OWN_STATE_PATHS}


def host_paths_naming(ids) -> list[str]:
    """Paths under the engines' host directories that name one of `ids`."""
    found = []
    for top in ENGINE_STATE_PATHS + OWN_STATE_PATHS:
        for rel, _ in _listing(top) or ():
            if any(i in rel for i in ids):
                found.append(os.path.join(top, rel))
    return found


# The private views an engine gets (SETUP below): /run and /var are tmpfs,
# /etc an overlay whose upper layer is in the scratch directory, cgroup2 on
# /sys/fs/cgroup (this machine's hybrid setup, see entrypoint_util). The
# host's /run/netns is bound back into the private /run, as a slave: the
# namespaces the test adds later appear in it.
PRIVATE_VIEWS = """set -eu
mount --make-rslave /
mkdir -p "$S/netns" "$S/etc.upper" "$S/etc.work"
mount --rbind /run/netns "$S/netns"
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir /run/netns
mount --rbind "$S/netns" /run/netns
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$S/etc.upper,workdir=$S/etc.work" /etc
mount -t tmpfs -o mode=0755 tmpfs /var
mkdir -p /var/tmp /var/lib /var/cache /var/log
chmod 1777 /var/tmp
ln -s /run /var/run
"""

CONTAINERS_CONF = """\
[engine]
runtime_supports_json = ["crun", "runc", "spt-oci"]
runtime_supports_nocgroup = ["crun", "spt-oci"]
cgroup_manager = "cgroupfs"
events_logger = "file"
[engine.runtimes]
spt-oci = ["%s"]
"""

STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "%s"
runroot = "/run/containers/storage"
"""


def ensure_netns_mount() -> None:
    """/run/netns as `ip netns add` leaves it: a shared mount. Bound into a
    private view before that, it would be a plain directory there, and the
    namespaces added later would not show through."""
    if not os.path.ismount("/run/netns"):
        probe = "spt-oci-probe-" + uuid.uuid4().hex[:8]
        subprocess.run(["ip", "netns", "add", probe], check=True, timeout=120)
        subprocess.run(["ip", "netns", "delete", probe], check=True, timeout=120)


class PrivateNs:
    """A mount namespace with PRIVATE_VIEWS (plus `extra` shell lines),
    kept alive by a `sleep` started here and ended by its pid."""

    def __init__(self, scratch: Path, extra: str = ""):
        self.scratch = scratch
        scratch.mkdir(parents=True, exist_ok=True)
        ensure_netns_mount()
        script = PRIVATE_VIEWS + extra + "echo ready\nexec sleep 3600\n"
        self.holder = subprocess.Popen(["unshare", "-m", "--propagation", "slave", "sh", "-c",
                                        script], env=dict(os.environ, S=str(scratch)),
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
        line = self.holder.stdout.readline()
        if line.strip() != "ready":
            self.close()
            raise AssertionError("cannot prepare the engine's mount namespace: %s"
                                 % self.holder.stderr.read())

    def prefix(self) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-m"]

    def close(self) -> None:
        from conftest import stop

        stop(self.holder)


class OciPodman(PrivateNs):
    """Debian's podman, rootful, with --runtime spt-oci configured the way
    docs/oci.md says (containers.conf lines), in a PrivateNs."""

    SETUP = "umount -l /sys/fs/cgroup\nmount -t cgroup2 none /sys/fs/cgroup\n"
    # What this machine's podman needs (see entrypoint_util).
    RUN_FLAGS = ("--cgroups=disabled", "--ulimit", "nofile=1024:1024",
                 "--ulimit", "nproc=1024:1024")

    def __init__(self, scratch: Path):
        super().__init__(scratch, self.SETUP)
        (scratch / "containers.conf").write_text(CONTAINERS_CONF % SPT_OCI)
        (scratch / "storage.conf").write_text(STORAGE_CONF % (scratch / "storage"))
        self.env = dict(os.environ, CONTAINERS_CONF=str(scratch / "containers.conf"),
                        CONTAINERS_STORAGE_CONF=str(scratch / "storage.conf"))
        self.names: list[str] = []
        self.ids: list[str] = []  # every container run (from --cidfile)

    def run(self, name: str, *args, detach: bool = True):
        """podman --runtime spt-oci run; the container's ID is remembered."""
        cidfile = self.scratch / ("cid-" + uuid.uuid4().hex[:8])
        proc = self.podman("--runtime", "spt-oci", "run", *(["-d"] if detach else []),
                           "--cidfile", cidfile, "--name", name, *self.RUN_FLAGS, *args)
        if cidfile.exists():
            self.ids.append(cidfile.read_text().strip())
        return proc

    def podman(self, *args, timeout: float = 90):
        return run([*self.prefix(), "podman", *map(str, args)], timeout=timeout, env=self.env)

    def new_name(self) -> str:
        name = "spt-oci-" + uuid.uuid4().hex[:8]
        self.names.append(name)
        return name

    def build(self, kernel: str, tag: str, *, cmd_args=()) -> str:
        """An image FROM scratch holding only the kernel, its CMD the kernel."""
        context = self.scratch / ("ctx-" + tag)
        context.mkdir()
        shutil.copy(kernel, context / os.path.basename(kernel))
        name = os.path.basename(kernel)
        cmd = json.dumps([KERNEL_DIR + "/" + name, *cmd_args])
        (context / "Containerfile").write_text(
            "FROM scratch\nCOPY %s %s/%s\nSTOPSIGNAL SIGTERM\nCMD %s\n"
            % (name, KERNEL_DIR, name, cmd))
        image = "localhost/spt-oci-test/%s:latest" % tag
        built = self.podman("build", "-q", "-t", image, str(context), timeout=300)
        assert built.returncode == 0, built.stderr
        return image

    # The entrypoint's podman harness reads state and logs the same way.
    state = PodmanNs.state
    wait_for_log = PodmanNs.wait_for_log

    def close(self) -> None:
        for name in self.names:
            self.podman("rm", "-f", "-t", "0", name)
        super().close()


# -- images without a registry -------------------------------------------------

def oci_image_archive(kernel: str, out: Path, name: str, cmd=None) -> Path:
    """An OCI image layout in a tar file, as `ctr image import` reads it:
    one layer holding /unikernel/KERNEL, its CMD the kernel. This is all a
    unikernel image needs (see docs/oci.md)."""
    import hashlib
    import io
    import tarfile

    def blob(data: bytes) -> tuple[str, int, bytes]:
        return "sha256:" + hashlib.sha256(data).hexdigest(), len(data), data

    base = os.path.basename(kernel)
    layer_io = io.BytesIO()
    with tarfile.open(fileobj=layer_io, mode="w", format=tarfile.PAX_FORMAT) as layer:
        info = tarfile.TarInfo(KERNEL_DIR.lstrip("/"))
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        layer.addfile(info)
        data = Path(kernel).read_bytes()
        info = tarfile.TarInfo(KERNEL_DIR.lstrip("/") + "/" + base)
        info.size, info.mode = len(data), 0o755
        layer.addfile(info, io.BytesIO(data))
    layer_digest, layer_size, layer_data = blob(layer_io.getvalue())
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Cmd": cmd or [KERNEL_DIR + "/" + base], "StopSignal": "SIGTERM"},
              "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}
    config_digest, config_size, config_data = blob(json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": config_digest, "size": config_size},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": layer_digest, "size": layer_size}]}
    manifest_digest, manifest_size, manifest_data = blob(json.dumps(manifest).encode())
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
         "size": manifest_size, "platform": {"architecture": "amd64", "os": "linux"},
         "annotations": {"io.containerd.image.name": name,
                         "org.opencontainers.image.ref.name": name.rpartition(":")[2]}}]}
    with tarfile.open(out, "w") as archive:
        def add(path: str, data: bytes):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add("index.json", json.dumps(index).encode())
        for digest, data in ((layer_digest, layer_data), (config_digest, config_data),
                             (manifest_digest, manifest_data)):
            add("blobs/sha256/" + digest.split(":")[1], data)
    return out


# -- containerd -----------------------------------------------------------------

CONTAINERD_CONFIG = """\
version = 2
root = "%(s)s/root"
state = "%(s)s/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "%(sock)s"
[ttrpc]
  address = "%(sock)s.ttrpc"
"""


class OciContainerd(PrivateNs):
    """Debian's containerd, started here with private root, state and
    socket, in a PrivateNs (the shim's fixed paths under /run are then
    private too), stopped by its pid. `ctr` talks to it."""

    NAMESPACE = "spt-test"

    def __init__(self, scratch: Path):
        super().__init__(scratch)
        state = scratch / "containerd"
        state.mkdir()
        # In the private /run: a socket path under the test's scratch
        # directory could exceed the 108 bytes of sun_path.
        self.socket = "/run/spt-test/containerd.sock"
        config = scratch / "containerd.toml"
        config.write_text(CONTAINERD_CONFIG % {"s": state, "sock": self.socket})
        self.log = open(scratch / "containerd.log", "w")
        # nsenter with only -m execs containerd: this Popen's pid is containerd's.
        self.daemon = subprocess.Popen([*self.prefix(), "containerd", "--config", str(config)],
                                       stdin=subprocess.DEVNULL, stdout=self.log,
                                       stderr=subprocess.STDOUT)
        self.ids: list[str] = []
        try:
            wait_for(lambda: self.ctr("version").returncode == 0, timeout=60, interval=0.2)
        except AssertionError:
            self.close()
            raise

    def ctr(self, *args, timeout: float = 90, **kwargs):
        return run([*self.prefix(), "ctr", "--address", str(self.socket), "--namespace",
                    self.NAMESPACE, *map(str, args)], timeout=timeout, **kwargs)

    def ctr_popen(self, *args, **kwargs):
        return subprocess.Popen([*self.prefix(), "ctr", "--address", str(self.socket),
                                 "--namespace", self.NAMESPACE, *map(str, args)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **kwargs)

    def new_id(self) -> str:
        cid = "spt-oci-" + uuid.uuid4().hex[:8]
        self.ids.append(cid)
        return cid

    def import_image(self, kernel: str, tag: str) -> str:
        name = "localhost/spt-oci-test/%s:latest" % tag
        archive = oci_image_archive(kernel, self.scratch / ("%s.tar" % tag), name)
        proc = self.ctr("image", "import", archive, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return name

    def close(self) -> None:
        from conftest import stop

        if getattr(self, "daemon", None) is not None:
            for cid in self.ids:
                self.ctr("task", "kill", "-s", "KILL", cid)
                self.ctr("task", "delete", "-f", cid)
                self.ctr("container", "delete", cid)
            stop(self.daemon, signal_term())
            self.log.close()
        super().close()


def signal_term():
    import signal

    return signal.SIGTERM
