"""Running untrusted code: a throwaway Linux sandbox (bubblewrap) with no network and bounded CPU,
memory, processes, file sizes and time.

Each run gets namespaces of its own (user, pid, network, ipc, uts, cgroup) from ``bwrap``, Debian's
``bubblewrap`` package (a system program tether calls; nothing of it is linked into tether):

- **no network**: a network namespace with only a loopback device that is down, so neither the internet
  nor the host's own services (a database on 127.0.0.1) can be reached;
- **a throwaway filesystem**: the root is an empty, read-only tmpfs; the interpreter's installation is
  bound read-only and nothing else of the host is visible; the working directory ``/work`` (where the
  files given are copied) and ``/tmp`` are size-limited tmpfs mounts that vanish with the run;
- **limits** set inside the namespaces before the code starts: CPU seconds, address space, processes
  (a fork bomb meets ``EAGAIN``), file size (stdout and stderr included), open files; and a wall-clock
  deadline after which the whole process tree is killed. The process limit is counted per user
  namespace, so concurrent runs do not share it; root is exempt from it, so a server running as root
  runs the sandbox as an unprivileged uid (``nobody``).

Nothing runs unsandboxed: where bubblewrap is missing or cannot create namespaces, :meth:`Sandbox.run`
raises :class:`SandboxUnavailableError` with the reason.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import Field

from tether.core.config import Config
from tether.core.errors import UserError

# Runs inside the sandbox as the interpreter's first program: copies the run's files into /work, sets the
# limits (inside the new user namespace, which is what makes the process limit count this run alone), then
# becomes the user's program. Its argument is a JSON object: limits and the program's argv.
_LAUNCHER = """
import json, os, resource, shutil, sys
spec = json.loads(sys.argv[1])
if os.path.isdir('/input'):
    shutil.copytree('/input', '/work', dirs_exist_ok=True)
for name, (soft, hard) in spec['limits'].items():
    resource.setrlimit(getattr(resource, name), (soft, hard))
os.execv(spec['argv'][0], spec['argv'])
"""


class SandboxUnavailableError(UserError):
    """The sandbox cannot run here (bubblewrap missing, or namespaces refused); nothing was run."""


class SandboxConfig(Config):
    """Limits of one sandboxed run."""

    time_s: float = Field(10.0, gt=0, le=600, description="wall-clock seconds before the run is killed")
    cpu_s: int = Field(5, ge=1, le=600, description="CPU seconds (SIGXCPU, then SIGKILL a second later)")
    memory_mb: int = Field(512, ge=32, description="address space of each process, MiB")
    processes: int = Field(32, ge=1, le=4096, description="processes and threads at once")
    file_mb: int = Field(16, ge=1, description="largest file a process may write (stdout and stderr too), MiB")
    disk_mb: int = Field(64, ge=1, description="size of /work and of /tmp, MiB each")
    open_files: int = Field(256, ge=16, description="open file descriptors per process")
    output_kb: int = Field(64, ge=1, description="stdout and stderr kept in the result, KiB each")
    python: str | None = Field(None, description="the interpreter that runs the code (default: /usr/bin/python3, "
                                                 "else this one's base installation)")
    bwrap: str = Field("bwrap", description="the bubblewrap program")


@dataclass(frozen=True)
class SandboxResult:
    """What a run did: its exit status as a shell reports it (128 + N: ended by signal N, e.g. 137 SIGKILL
    at the deadline, 152 SIGXCPU at the CPU limit), its output (cut to ``output_kb``), and whether the
    deadline ended it."""

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float
    truncated: bool = False

    @property
    def ok(self) -> bool:
        """Exited 0 within its limits."""
        return self.exit_code == 0 and not self.timed_out

    @property
    def signal(self) -> str | None:
        """The signal that ended the run (``SIGKILL``, ``SIGXCPU``, ...), if one did."""
        if not 128 < self.exit_code <= 128 + 64:
            return None
        try:
            return signal.Signals(self.exit_code - 128).name
        except ValueError:
            return f"signal {self.exit_code - 128}"

    def as_dict(self) -> dict[str, object]:
        """The API's and the logs' form."""
        return {"exit_code": self.exit_code, "signal": self.signal, "timed_out": self.timed_out,
                "stdout": self.stdout, "stderr": self.stderr, "seconds": round(self.seconds, 4),
                "truncated": self.truncated}


class Sandbox:
    """Runs Python programs in the sandbox described in the module, one process tree per run; thread-safe."""

    def __init__(self, cfg: SandboxConfig | None = None) -> None:
        self.cfg = cfg or SandboxConfig()
        python = self.cfg.python or _base_python()
        self.python = os.path.realpath(python)
        if not os.access(self.python, os.X_OK):
            raise UserError(f"sandbox: no interpreter at {python!r} (set python)")
        self._bwrap = shutil.which(self.cfg.bwrap)

    def check(self) -> None:
        """Raise :class:`SandboxUnavailableError` unless a run can be isolated here."""
        if self._bwrap is None:
            raise SandboxUnavailableError(f"sandbox: {self.cfg.bwrap!r} not found; install bubblewrap (Debian and "
                                          "Ubuntu: apt-get install bubblewrap)")
        _probe(self._bwrap, self.python)

    def run(self, code: str, *, stdin: str = "", files: Mapping[str, str] | None = None,
            args: tuple[str, ...] = ()) -> SandboxResult:
        """Run ``code`` as ``/work/main.py`` with ``stdin``, beside ``files`` (relative path -> text).

        Raises:
            SandboxUnavailableError: the sandbox cannot isolate a run here; nothing was run.
            UserError: a file name leaves the working directory.
        """
        self.check()
        assert self._bwrap is not None
        cfg = self.cfg
        with tempfile.TemporaryDirectory(prefix="tether-sandbox-") as scratch:
            root = Path(scratch)
            inputs = root / "input"
            inputs.mkdir()
            if "main.py" in (files or {}):
                raise UserError("sandbox: a file may not be named main.py (the program itself is main.py)")
            for name, text in {**(files or {}), "main.py": code}.items():
                _write_input(inputs, name, text)
            os.chmod(root, 0o755)
            for path in inputs.rglob("*"):
                os.chmod(path, 0o755 if path.is_dir() else 0o644)
            os.chmod(inputs, 0o755)
            out, err = root / "stdout", root / "stderr"
            mb = 1 << 20
            spec = {"argv": [self.python, "-I", "-B", "/work/main.py", *args],
                    "limits": {"RLIMIT_CPU": [cfg.cpu_s, cfg.cpu_s + 1],
                               "RLIMIT_AS": [cfg.memory_mb * mb] * 2,
                               "RLIMIT_NPROC": [cfg.processes] * 2,
                               "RLIMIT_FSIZE": [cfg.file_mb * mb] * 2,
                               "RLIMIT_NOFILE": [cfg.open_files] * 2,
                               "RLIMIT_CORE": [0, 0]}}
            command = [self._bwrap, *_mounts(self.python, inputs, cfg.disk_mb * mb),
                       "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
                       "--hostname", "sandbox", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
                       "--setenv", "HOME", "/work", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
                       "--chdir", "/work", "--",
                       self.python, "-I", "-S", "-c", _LAUNCHER, json.dumps(spec)]
            start = time.perf_counter()
            with open(out, "wb") as stdout, open(err, "wb") as stderr:
                process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr,
                                           start_new_session=True, user=_as_nobody(),
                                           group=_as_nobody(), extra_groups=[] if _as_nobody() else None)
                timed_out = _feed_and_wait(process, stdin.encode("utf-8", errors="replace"), cfg.time_s)
            seconds = time.perf_counter() - start
            limit = cfg.output_kb * 1024
            stdout_text, cut_out = _read(out, limit)
            stderr_text, cut_err = _read(err, limit)
        # bubblewrap's init reports a program killed by signal N as 128 + N; the deadline's SIGKILL of bwrap
        # itself comes back from Popen as -9: one convention for both.
        code_ = process.returncode if process.returncode >= 0 else 128 - process.returncode
        if code_ != 0 and not timed_out and stderr_text.startswith("bwrap:"):
            # bubblewrap itself failed before the program ran: not the program's result.
            raise SandboxUnavailableError(f"sandbox: {stderr_text.strip()[:300]}")
        return SandboxResult(code_, stdout_text, stderr_text, timed_out, seconds, cut_out or cut_err)


def _base_python() -> str:
    # The system's interpreter where there is one: it lives under /usr, which is bound anyway, and an
    # unprivileged uid can read it (a pyenv build under /root cannot be). Otherwise this interpreter's base
    # installation, never a virtual environment's: tether's own packages are not the sandbox's business.
    for candidate in ("/usr/bin/python3", str(Path(sys.base_prefix) / "bin" / "python3")):
        if os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


def _mounts(python: str, inputs: Path, disk_bytes: int) -> list[str]:
    # An empty root, the system's read-only /usr (and the interpreter's own prefix where it lives
    # elsewhere), the run's inputs read-only at /input, and two size-limited tmpfs mounts.
    mounts = ["--tmpfs", "/", "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
        path = Path("/") / name
        if path.is_symlink():
            mounts += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            mounts += ["--ro-bind", str(path), str(path)]
    prefix = Path(python).parent.parent
    if not str(prefix).startswith("/usr"):
        mounts += ["--ro-bind", str(prefix), str(prefix)]
    if Path("/etc/ld.so.cache").exists():
        mounts += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    mounts += ["--ro-bind", str(inputs), "/input", "--proc", "/proc", "--dev", "/dev",
               "--size", str(disk_bytes), "--tmpfs", "/work", "--size", str(disk_bytes), "--tmpfs", "/tmp",
               "--remount-ro", "/"]
    return mounts


def _write_input(folder: Path, name: str, text: str) -> None:
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts or "\0" in name:
        raise UserError(f"sandbox: file name {name[:100]!r} must be a relative path inside the working directory")
    path = folder / relative
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Text that is not valid UTF-8 (a lone surrogate from JSON) is replaced, not an error of the server's.
        path.write_text(text, encoding="utf-8", errors="replace")
    except (OSError, ValueError) as exc:
        raise UserError(f"sandbox: cannot write file {name[:100]!r}: {exc}") from None


def _as_nobody() -> int | None:
    # Root is exempt from RLIMIT_NPROC: as root the sandbox runs as nobody (its user namespace maps it),
    # through Popen's own user/group arguments, not a preexec function (unsafe in a threaded server).
    return 65534 if os.getuid() == 0 else None


def _feed_and_wait(process: subprocess.Popen[bytes], stdin: bytes, deadline_s: float) -> bool:
    try:
        process.communicate(stdin, timeout=deadline_s)
        return False
    except subprocess.TimeoutExpired:
        # bwrap leads its own process group; killing it takes the namespace with it (--die-with-parent,
        # and the pid namespace's init dying kills every process left in it).
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        return True


def _read(path: Path, limit: int) -> tuple[str, bool]:
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    return data[:limit].decode("utf-8", errors="replace"), len(data) > limit


@functools.cache
def _probe(bwrap: str, python: str) -> None:
    # Once per process: can namespaces be created here (a container may refuse them)?
    command = [bwrap, *_mounts(python, Path("/"), 1 << 20), "--unshare-all", "--die-with-parent", "--",
               python, "-I", "-S", "-c", "pass"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, user=_as_nobody(),
                              group=_as_nobody(), extra_groups=[] if _as_nobody() else None)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailableError(f"sandbox: {bwrap} could not start: {exc}") from None
    if done.returncode != 0:
        raise SandboxUnavailableError(f"sandbox: {bwrap} cannot create namespaces here: "
                                 f"{done.stderr.strip()[:300] or done.returncode}")
