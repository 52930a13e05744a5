"""The code sandbox: what it must block (network, writes outside its directory, fork bombs, runaway loops,
memory, output floods), each checked against a run that would succeed without the limit."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from tether.core.errors import UserError
from tether.core.sandbox import Sandbox, SandboxConfig, SandboxUnavailableError

if shutil.which("bwrap") is None:
    # CI installs bubblewrap and sets TETHER_REQUIRE_SANDBOX: there a missing sandbox fails, never skips.
    if os.environ.get("TETHER_REQUIRE_SANDBOX"):
        raise RuntimeError("bubblewrap (bwrap) is not installed; apt-get install bubblewrap")
    pytest.skip("bubblewrap (bwrap) is not installed", allow_module_level=True)


def sandbox(**limits: object) -> Sandbox:
    return Sandbox(SandboxConfig(**{"time_s": 10, "cpu_s": 5, **limits}))


def test_runs_code_with_stdin_and_files() -> None:
    code = "import sys\nprint(int(open('data/n.txt').read()) + 1, sys.stdin.read().strip())"
    result = sandbox().run(code, stdin="world\n", files={"data/n.txt": "41"})
    assert result.ok and result.stdout == "42 world\n" and result.signal is None, result


def test_no_network_not_even_the_hosts_own_services() -> None:
    # The host reaches its PostgreSQL on loopback: the sandbox must not. 192.0.2.1 is TEST-NET-1, routed
    # nowhere, so a sandbox that leaked would still not reach the internet.
    socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    code = ("import socket\n"
            "for address in [('127.0.0.1', 5432), ('192.0.2.1', 80)]:\n"
            "    try:\n"
            "        socket.create_connection(address, timeout=2).close()\n"
            "        print('connected')\n"
            "    except OSError as exc:\n"
            "        print('blocked', exc.errno)\n")
    result = sandbox().run(code)
    assert result.ok, result
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["blocked", "blocked"], result.stdout


def test_writes_land_only_in_its_throwaway_directory(tmp_path: Path) -> None:
    outside = tmp_path / f"escape-{uuid.uuid4().hex}"
    code = ("import os\n"
            f"for path in [{str(outside)!r}, '/usr/escape', '/escape', '/etc/escape', '/input/escape']:\n"
            "    try:\n"
            "        open(path, 'w').write('x')\n"
            "        print('wrote', path)\n"
            "    except OSError as exc:\n"
            "        print('refused', exc.errno)\n"
            "open('/work/mine.txt', 'w').write('kept for this run')\n"
            "print(open('/work/mine.txt').read())\n")
    result = sandbox().run(code)
    assert result.ok, result
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:5]] == ["refused"] * 5, result.stdout
    assert lines[5] == "kept for this run"
    assert not outside.exists() and not Path("/usr/escape").exists() and not Path("/escape").exists()
    again = sandbox().run("import os\nprint(sorted(os.listdir('/work')))")
    assert again.stdout == "['main.py']\n"  # the last run's files went with it


def test_a_fork_bomb_meets_the_process_limit() -> None:
    code = ("import os, time\n"
            "n = 0\n"
            "while True:\n"
            "    try:\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(30)\n"
            "            os._exit(0)\n"
            "        n += 1\n"
            "    except OSError as exc:\n"
            "        print('stopped after', n, exc.errno)\n"
            "        break\n")
    result = sandbox(processes=16).run(code)
    assert result.ok and result.stdout.startswith("stopped after"), result
    assert int(result.stdout.split()[2]) < 16
    assert result.seconds < 5  # the children died with the run, not 30 s later
    assert subprocess.run(["true"]).returncode == 0  # the host can still start processes


def test_a_runaway_loop_is_stopped_by_the_cpu_limit() -> None:
    result = sandbox(cpu_s=1).run("while True:\n    pass\n")
    assert not result.ok and result.signal == "SIGXCPU" and not result.timed_out, result
    assert result.seconds < 5


def test_the_deadline_kills_the_whole_process_tree() -> None:
    marker = f"sleeper-{uuid.uuid4().hex}"  # a child holds it on its command line, so pgrep can find it
    code = ("import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}])\n"
            "print('started', flush=True)\n"
            "time.sleep(60)\n")
    result = sandbox(time_s=1).run(code)
    assert result.timed_out and result.signal == "SIGKILL" and result.seconds < 5, result
    assert result.stdout == "started\n"
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    assert left.stdout == "", f"processes outlived the run: {left.stdout}"


def test_memory_is_bounded() -> None:
    assert sandbox(memory_mb=512).run("x = bytearray(64 * 2**20)\nprint(len(x))").ok
    result = sandbox(memory_mb=128).run("x = bytearray(512 * 2**20)")
    assert result.exit_code == 1 and "MemoryError" in result.stderr, result


def test_output_floods_are_cut() -> None:
    result = sandbox(output_kb=4, file_mb=1).run("while True:\n    print('x' * 1000)\n")
    assert result.truncated and len(result.stdout) == 4096
    assert "File too large" in result.stderr  # the write limit ended it, not the deadline
    assert not result.timed_out


def test_file_names_stay_inside_the_working_directory() -> None:
    for name in ("../escape.py", "/etc/passwd", ""):
        with pytest.raises(UserError, match="relative path"):
            sandbox().run("pass", files={name: "x"})


def test_without_bubblewrap_nothing_runs() -> None:
    with pytest.raises(SandboxUnavailableError, match="install bubblewrap"):
        Sandbox(SandboxConfig(bwrap="no-such-bwrap")).run("print('unsandboxed')")
