"""Hostile generated code: each program must fail its sample with a reason and leave the
scorer (this process), its files and the machine as they were.

Every case runs under the isolation in force here, and again under each weaker mode that can
run Python here, forced. A case runs in a mode only if the mode claims to contain it (the
capabilities below); the others are skipped with the reason.
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from d3cli.tasks import execution
from d3cli.tasks.execution import (
    FOLDER_BYTES,
    OUTPUT_LIMIT_BYTES,
    announce_isolation,
    candidate_modes,
    isolation,
    probe,
    run_program,
)

ROOT = os.geteuid() == 0
TIMEOUT = 2.0  # seconds per program: the timed-out cases take this long


@functools.cache
def capabilities(mode: str) -> frozenset[str] | str:
    """What `mode` contains here, or why it cannot run Python here.

    always: time, memory, output, descriptors, environment; processes: the program can
    neither see nor signal nor outlive the scorer's processes; files: it sees only its own
    folder; unprivileged: it cannot raise its limits or regain root; processes_limit: a
    per-uid process cap; network: no interface but loopback."""
    seen = probe(mode)
    if isinstance(seen, str):
        return seen
    own_uid = ROOT and mode != "limits"
    found = {"always"}
    if mode == "namespaces" or own_uid:
        found.add("processes")
    if mode == "namespaces":
        found.add("files")
    if not (ROOT and mode == "limits"):
        found.add("unprivileged")
    if own_uid:
        found.add("processes_limit")
    if seen[3] <= 1:
        found.add("network")
    return frozenset(found)


def modes() -> list[str]:
    """The mode in force, then each weaker one."""
    order = candidate_modes()
    return list(order[order.index(isolation().mode):])


@dataclass(frozen=True)
class Case:
    name: str
    program: str  # formatted with the fields of `fields`
    needs: str  # the capability that contains it
    reason: str = ""  # a part of the failure reason, where it is fixed

    def __str__(self) -> str:
        return self.name


CASES = [
    # the eight programs of the report
    Case("write_tmp", "open('{tmp}', 'w').write('x')", "files"),
    Case("posix_system", "import posix\nassert posix.system('touch {tmp}') == 0", "files"),
    Case("read_host_file", "print(open('/etc/hostname').read())", "files", "/etc/hostname"),
    Case("kill_parent", "import posix\nposix.kill(posix.getppid(), 9)\nposix.kill({scorer}, 9)",
         "processes"),
    Case("raw_socket", "import _socket\ns = _socket.socket()\ns.settimeout(1)\n"
         "s.connect(('127.0.0.1', {port}))", "network"),
    Case("fork_bomb", "import posix\nfor _ in range(50):\n    posix.fork()", "processes_limit"),
    Case("huge_memory", "bytearray(8 << 30)", "always", "MemoryError"),
    Case("endless_loop", "while True:\n    pass", "always", "timed out"),
    # signals
    Case("kill_parent_group", "import posix\nposix.killpg(posix.getpgid({scorer}), 9)",
         "processes"),
    Case("kill_everything", "import posix, time\nposix.kill(-1, 9)\ntime.sleep(0.2)\n"
         "posix.kill({scorer}, 0)", "processes"),
    Case("ctypes_kill", "import ctypes\nassert ctypes.CDLL(None).kill({scorer}, 9) == 0",
         "processes"),
    Case("outlive_the_sample", "import ctypes, posix, time\nif posix.fork() == 0:\n"
         "    posix.setsid()\n    libc = ctypes.CDLL(None)\n    libc.prctl(15, b'{tag}', 0, 0, 0)\n"
         "    libc.prctl(1, 0, 0, 0, 0)\n    time.sleep(60)\nraise SystemExit('left a process')",
         "processes", "left a process"),
    # files
    Case("write_home", "open('{home}/{tag}', 'w').write('x')", "files"),
    Case("overwrite_results", "open('{sentinel}/results.jsonl', 'w').write('lost')", "files"),
    Case("write_python", "import sys\nopen(sys.prefix + '/{tag}', 'w').write('x')", "files"),
    Case("forge_own_output", "import posix\nfor name in ('../out', '../err'):\n"
         "    open(name, 'w').write('forged')\nposix._exit(0)", "files"),
    Case("read_parent_environ", "raise SystemExit('LEAK ' + open('/proc/{scorer}/environ').read())",
         "processes"),
    Case("symlink_read", "import posix\nposix.symlink('/etc/hostname', 'h')\n"
         "raise SystemExit('LEAK ' + open('h').read())", "files"),
    Case("symlink_write", "import posix\nposix.symlink('{sentinel}', 'd')\n"
         "open('d/planted', 'w').write('x')", "files"),
    Case("link_left_for_cleanup", "import posix\nposix.symlink('{sentinel}', 'd')\n"
         "raise SystemExit('left a link')", "always", "left a link"),
    Case("fill_the_disk", "for i in range(100):\n    open(f'f{{i}}', 'wb').write(b'x' * (8 << 20))",
         "files", "No space left"),
    # privileges, limits and descriptors
    Case("ctypes_setuid", "import ctypes\nassert ctypes.CDLL(None).setuid(0) == 0", "unprivileged"),
    Case("raise_limits", "import resource\nresource.setrlimit(resource.RLIMIT_AS, "
         "(resource.RLIM_INFINITY, resource.RLIM_INFINITY))\nbytearray(8 << 30)", "unprivileged",
         "not allowed to raise"),
    Case("huge_output", "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", "always"),
    Case("redirect_stdout", "import posix\nposix.dup2(posix.open('/dev/null', posix.O_WRONLY), 1)",
         "always", "exited before the tests finished"),
    Case("close_descriptors", "import posix\nposix.closerange(0, 1 << 16)", "always"),
    Case("write_inherited_descriptors", "import posix\nfor fd in range(3, 256):\n    try:\n"
         "        posix.write(fd, b'lost')\n    except OSError:\n        pass\n"
         "raise SystemExit('wrote nothing')", "always", "wrote nothing"),
    Case("read_scorer_environment", "import os\nraise SystemExit(repr(dict(os.environ)))",
         "always", "HOME"),
]


@pytest.fixture(scope="module")
def bystander():
    """A process of the scorer's user that must outlive every case."""
    process = subprocess.Popen(["sleep", "600"])
    yield process
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def listener():
    """A loopback port that a program outside a network namespace could reach."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    yield server
    server.close()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() if path.is_file() else b"" for path in
            sorted(folder.rglob("*"))}


def processes_named(name: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == name:
                found.append(entry.name)
        except OSError:
            continue
    return found


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("mode", ["namespaces", "uid", "limits"])
def test_hostile_program_fails_and_changes_nothing(mode, case, tmp_path, bystander, listener,
                                                   monkeypatch):
    if mode not in modes():
        pytest.skip(f"{mode} is not used here: {isolation().mode} is in force")
    found = capabilities(mode)
    if isinstance(found, str):
        pytest.skip(f"{mode} cannot run Python here: {found}")
    if case.needs not in found:
        pytest.skip(f"{mode} does not guarantee '{case.needs}' here")
    tag = "d3h" + secrets.token_hex(4)
    sentinel = tmp_path / "results"
    sentinel.mkdir()
    (sentinel / "results.jsonl").write_text('{"id": 1}\n')
    before = snapshot(sentinel)
    targets = [Path("/tmp") / tag, Path.home() / tag, Path(sys.prefix) / tag]
    secret = f"SECRET_{tag}"
    monkeypatch.setenv("D3_TEST_SECRET", secret)
    program = case.program.format(tmp=targets[0], home=Path.home(), scorer=os.getpid(),
                                  port=listener.getsockname()[1], tag=tag, sentinel=sentinel)
    with (sentinel / "results.jsonl").open("a") as held_open:  # a descriptor the scorer holds
        result = run_program(program, timeout_seconds=TIMEOUT, mode=mode)
        held_open.flush()
    try:
        assert not result.passed and result.reason, result
        assert case.reason in result.reason
        assert "LEAK" not in result.reason and secret not in result.reason
        assert snapshot(sentinel) == before  # the scorer's files are untouched
        assert bystander.poll() is None  # and its other processes alive
        assert [path for path in targets if path.exists()] == []
        assert processes_named(tag) == []
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected
    finally:
        for path in targets:
            path.unlink(missing_ok=True)


def test_the_sandbox_keeps_scoring_ordinary_programs():
    assert run_program("import math\nassert math.gcd(12, 18) == 6").passed
    assert run_program("import pathlib\npath = pathlib.Path('x')\npath.write_text('own folder')\n"
                       "assert path.read_text() == 'own folder'").passed
    assert run_program(f"open('big', 'wb').write(b'x' * {OUTPUT_LIMIT_BYTES // 2})").passed


def test_namespaces_hide_the_host_and_give_a_folder_of_its_own():
    if isolation().mode != "namespaces":
        pytest.skip(f"no namespaces here: {isolation().description}")
    program = ("import os\nassert os.getpid() == 1 and os.getuid() != 0\n"
               "assert not os.path.exists('/etc') and not os.path.exists('/work')\n"
               "assert sorted(os.listdir('/proc'))[0] == '1'\n"
               f"assert os.statvfs('.').f_blocks * os.statvfs('.').f_frsize == {FOLDER_BYTES}")
    result = run_program(program)
    assert result.passed, result.reason


def test_the_isolation_in_force_is_said_once(capsys, monkeypatch):
    monkeypatch.setattr(execution, "_announced", threading.Event())  # as in a new process
    found = announce_isolation()
    announce_isolation()
    assert capsys.readouterr().err == f"d3: generated code runs in: {found.description}\n"
    assert found.mode in ("namespaces", "uid", "limits") and found.description
    if found.mode != "namespaces":
        assert found.description.startswith("fallback")


def test_a_refused_mode_falls_back_and_says_why(monkeypatch):
    seen = {"namespaces": "sandbox setup failed: unshare: refused",
            "uid": "sandbox setup failed: Permission denied", "limits": (1000, 42, True, 3)}
    monkeypatch.setattr(execution, "probe", seen.__getitem__)
    isolation.cache_clear()
    try:
        found = isolation()
    finally:
        isolation.cache_clear()
    assert found.mode == "limits"
    assert found.description.startswith("fallback (namespaces: sandbox setup failed: unshare")
    assert "network open" in found.description
