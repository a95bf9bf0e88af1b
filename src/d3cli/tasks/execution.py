"""Running generated code against its tests: one isolated process per sample, with limits.

Each program runs through the launcher in `sandbox` (see there what each mode isolates): in
the best case in its own mount, PID and network namespaces as a throwaway uid, seeing only
the Python installation (read-only) and a fresh folder of its own, so it cannot signal the
scorer, read host files or write anything outside that folder. Where the kernel refuses
namespaces a weaker mode is used, and said: `isolation()` probes once per process which mode
works and describes it; `announce_isolation()` prints that once. In every mode the program
has a wall-clock timeout, hard address-space, CPU-time and file-size limits, stdin closed,
and the reference harness's guard that replaces process, socket and file-removal functions
(so programs that use them fail as they do there). A sample passes only if the process exits
0 *and* prints a random token that the harness writes after the tests, so ``sys.exit(0)`` or
``os._exit`` before the tests fail that sample.

Code post-processing lives here too, as the reference harness applies it to code answers
before scoring: fenced-block extraction and trimming prose after the code.
"""

from __future__ import annotations

import ast
import functools
import marshal
import os
import random
import re
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_MEMORY_BYTES = 2 << 30
OUTPUT_LIMIT_BYTES = 16 << 20
FOLDER_BYTES = 64 << 20  # the program's own folder, a tmpfs under namespaces
PROCESSES = 64  # per throwaway uid
LAUNCHER = Path(__file__).with_name("sandbox.py")
THROWAWAY_UIDS = range(65000, 65534)  # unassigned on Debian; each sample takes its own
SYSTEM_PATHS = ("/lib", "/lib32", "/lib64", "/libx32", "/usr/lib", "/usr/lib32", "/usr/lib64",
                "/usr/libx32")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")

# Runs before the generated code, as the reference harness's guard does: refuse network,
# process and file-removal calls. Not the isolation (the `sandbox` launcher is).
GUARD = """
def _d3_refuse(*args, **kwargs):
    raise PermissionError("not allowed while scoring generated code")


def _d3_guard():
    import os, shutil, socket, subprocess
    blocked = {
        os: ("system", "popen", "kill", "killpg", "fork", "forkpty", "remove", "unlink",
             "rmdir", "removedirs", "rename", "renames", "replace", "truncate", "putenv",
             "chmod", "chown", "setuid", "execv", "execve", "execvp", "execvpe", "spawnv",
             "spawnve", "spawnl", "spawnle", "posix_spawn", "posix_spawnp"),
        shutil: ("rmtree", "move", "chown"),
        subprocess: ("Popen", "call", "run", "check_call", "check_output", "getoutput",
                     "getstatusoutput"),
        socket: ("socket", "create_connection", "create_server", "socketpair",
                 "getaddrinfo", "fromfd"),
    }
    for module, names in blocked.items():
        for name in names:
            if hasattr(module, name):
                setattr(module, name, _d3_refuse)


_d3_guard()
del _d3_guard
"""
# What the probe reports: uid, pid, whether /etc is visible, network interfaces.
PROBE = ("import os, _socket\n"
         "print(os.getuid(), os.getpid(), os.path.exists('/etc'), len(_socket.if_nameindex()))")


@dataclass(frozen=True)
class ExecutionResult:
    """Whether the program passed, and a short reason when it did not."""

    passed: bool
    reason: str


@dataclass(frozen=True)
class Isolation:
    """The isolation mode in force (`sandbox`'s ``namespaces``, ``uid`` or ``limits``) and
    what it guarantees, in words."""

    mode: str
    description: str


_uids_lock = threading.Lock()
_uids_in_use: set[int] = set()


@contextmanager
def throwaway_uid(mode: str) -> Iterator[int | None]:
    """A uid no other sample of this process is using, when root runs a mode that drops to
    one; None otherwise."""
    if os.geteuid() != 0 or mode == "limits":
        yield None
        return
    with _uids_lock:
        uid = random.choice([uid for uid in THROWAWAY_UIDS if uid not in _uids_in_use])
        _uids_in_use.add(uid)
    try:
        yield uid
    finally:
        with _uids_lock:
            _uids_in_use.discard(uid)


@functools.cache
def readable_paths() -> list[str]:
    """What the program may read under namespaces: the system libraries and the Python
    installation (virtual environment and base), outermost paths only."""
    python = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
              os.path.dirname(os.path.realpath(sys.executable))}
    paths: list[str] = []
    for path in sorted({*SYSTEM_PATHS, *python}):
        if not any(path.startswith(kept.rstrip("/") + "/") for kept in paths):
            paths.append(path)
    return paths


def launcher_config(folder: Path, mode: str, uid: int | None, timeout_seconds: float,
                    memory_bytes: int) -> dict:
    """What `sandbox.main` needs to run ``folder/work/program.py``."""
    work = str(folder / "work")
    limits = {"AS": memory_bytes, "CPU": int(timeout_seconds) + 1, "FSIZE": OUTPUT_LIMIT_BYTES,
              "CORE": 0}
    if uid is not None:  # counted per uid: only a uid of its own makes this safe
        limits["NPROC"] = PROCESSES
    return {"mode": mode, "python": sys.executable, "work": work,
            "staging": str(folder / "root"), "binds": readable_paths(), "devices": list(DEVICES),
            "uid": uid, "limits": limits, "timeout": timeout_seconds,
            "folder_bytes": FOLDER_BYTES,
            "env": {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work,
                    "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}}


def prepare_folder(folder: Path, source: str, uid: int | None) -> None:
    """``work/program.py`` (the program's own, owned by `uid`) and the empty ``root`` the
    namespaces mode builds its file system on. The folder itself stays root's: the
    program can reach ``work`` but not the output files next to it."""
    (folder / "root").mkdir()
    (folder / "work").mkdir()
    (folder / "work" / "program.py").write_text(source, encoding="utf-8")
    if uid is not None:
        folder.chmod(0o711)
        for path in (folder / "work", folder / "work" / "program.py"):
            os.chown(path, uid, uid)


def launch(folder: Path, source: str, timeout_seconds: float, memory_bytes: int,
           mode: str) -> int | None:
    """Run `source` in `mode` with its output in ``folder/out`` and ``folder/err``; its exit
    status (negative: the signal that ended it), or None when it ran out of time."""
    with throwaway_uid(mode) as uid:
        prepare_folder(folder, source, uid)
        config = launcher_config(folder, mode, uid, timeout_seconds, memory_bytes)
        with (folder / "out").open("wb") as out, (folder / "err").open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", str(LAUNCHER),
                 marshal.dumps(config).hex()],
                env={"LANG": "C.UTF-8"}, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True)
            if exited(process, timeout_seconds):
                return process.wait()
            process.terminate()  # the launcher ends the program and all it started
            if not exited(process, 5):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return None


def exited(process: subprocess.Popen, timeout_seconds: float) -> bool:
    """Whether `process` ends within `timeout_seconds`; woken as it exits through a pidfd
    where the kernel has them (`Popen.wait` polls, up to 50 ms late)."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        try:
            process.wait(timeout=timeout_seconds)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(1000 * timeout_seconds))
    finally:
        os.close(pidfd)


def _tail(path: Path, size: int = 4096) -> str:
    with path.open("rb") as handle:
        handle.seek(max(path.stat().st_size - size, 0))
        return handle.read().decode("utf-8", errors="replace")


def run_program(
    program: str,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    mode: str | None = None,
) -> ExecutionResult:
    """Run `program` (code followed by its tests) isolated and limited; `mode` forces an
    isolation mode (default: the strongest that works here, `isolation()`)."""
    token = secrets.token_hex(16)
    source = f"{GUARD}\n{program}\n\nprint({token!r}, flush=True)\n"
    with tempfile.TemporaryDirectory(prefix="d3-exec-") as name:
        folder = Path(name)
        code = launch(folder, source, timeout_seconds, memory_bytes, mode or isolation().mode)
        if code is None:
            return ExecutionResult(False, f"timed out after {timeout_seconds:g} s")
        if code < 0:
            return ExecutionResult(False, f"killed by {signal.Signals(-code).name}")
        if code != 0:
            lines = _tail(folder / "err").strip().splitlines()
            return ExecutionResult(False, lines[-1] if lines else f"exit status {code}")
        if not _tail(folder / "out").rstrip().endswith(token):
            return ExecutionResult(False, "exited before the tests finished")
        return ExecutionResult(True, "passed")


# --- which isolation is in force ------------------------------------------------------------


def probe(mode: str) -> tuple[int, int, bool, int] | str:
    """What the probe program sees in `mode` (uid, pid, /etc visible, network interfaces),
    or why it did not run."""
    with tempfile.TemporaryDirectory(prefix="d3-exec-") as name:
        folder = Path(name)
        code = launch(folder, PROBE, 10, DEFAULT_MEMORY_BYTES, mode)
        if code != 0:
            lines = _tail(folder / "err").strip().splitlines()
            return lines[-1] if lines else f"exit status {code}"
        uid, pid, etc, interfaces = _tail(folder / "out").split()
        return int(uid), int(pid), etc == "True", int(interfaces)


def describe(mode: str, seen: tuple[int, int, bool, int], refused: list[str]) -> str:
    """What `mode` guarantees, given what the probe saw there and why stronger modes
    failed."""
    uid, _, _, interfaces = seen
    if mode == "namespaces":
        spaces = "mount, PID, network, IPC and UTS" if os.geteuid() == 0 else (
            "user, mount, PID, network, IPC and UTS")
        who = "a throwaway uid" if os.geteuid() == 0 else f"uid {uid} without capabilities"
        return (f"OS sandbox: {spaces} namespaces, {who}; it sees only the Python "
                f"installation (read-only) and its own {FOLDER_BYTES >> 20} MiB folder; "
                "resource limits")
    network = "no network" if interfaces <= 1 else "network open"
    why = "; ".join(refused)
    if mode == "uid":
        return (f"fallback ({why}): a throwaway uid in its own session, resource limits, "
                f"{network}; it can read files any user may read and write where any user "
                "may write")
    return (f"fallback ({why}): resource limits and its own session only, as uid {uid}, "
            f"{network}; it can read, write and signal whatever uid {uid} can")


def candidate_modes() -> tuple[str, ...]:
    """The modes to try, strongest first: namespaces on Linux, a throwaway uid as root."""
    if not sys.platform.startswith("linux"):
        return ("limits",)
    return ("namespaces", "uid", "limits") if os.geteuid() == 0 else ("namespaces", "limits")


@functools.cache
def isolation() -> Isolation:
    """The strongest isolation mode that runs a program here (probed once per process)."""
    modes = candidate_modes()
    refused = [] if "namespaces" in modes else ["namespaces: Linux only"]
    for mode in modes:
        seen = probe(mode)
        if mode == "namespaces" and isinstance(seen, tuple) and (seen[1] != 1 or seen[2]):
            seen = "the program still saw host processes or files"
        if isinstance(seen, tuple):
            return Isolation(mode, describe(mode, seen, refused))
        refused.append(f"{mode}: {seen}")
    return Isolation("limits", f"fallback: no mode runs Python here ({'; '.join(refused)})")


_announced = threading.Event()


def announce_isolation() -> Isolation:
    """The isolation in force, printed to stderr the first time in this process."""
    found = isolation()
    if not _announced.is_set():
        _announced.set()
        print(f"d3: generated code runs in: {found.description}", file=sys.stderr)
    return found


# --- post-processing ------------------------------------------------------------------------

FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
CODE_START = re.compile(
    r"(def |async def |class |import |from |@|#|if __name__|"
    r"[A-Za-z_][\w.]*\s*(=|\+=|\()|assert |print\(|try:|for |while |with )"
)


def fenced_code(text: str, entry_point: str | None = None) -> str | None:
    """The Python fenced block of `text` (the one defining `entry_point` when several do);
    an unclosed last fence (a cut-off answer) runs to the end. None without a fence."""
    blocks = [
        body
        for language, body in FENCE.findall(text)
        if language.lower() in ("", "python", "py", "python3")
    ]
    if not blocks:
        return None
    if entry_point:
        defining = [block for block in blocks if re.search(rf"\bdef\s+{entry_point}\s*\(", block)]
        if defining:
            return defining[0]
    return blocks[0]


def trim_to_code(code: str) -> str:
    """Code that parses is kept as it is. Otherwise drop prose around it: start at the first
    line that looks like Python, stop at the next unindented line that does not, then drop
    trailing lines until the rest parses (kept whole if no prefix parses)."""
    try:
        ast.parse(code)
        return code
    except SyntaxError:
        pass
    lines = code.splitlines()
    start = next(
        (index for index, line in enumerate(lines) if line[:1].isspace() or CODE_START.match(line)),
        0,
    )  # skip leading prose
    kept: list[str] = []
    for line in lines[start:]:
        if line.strip() and not line[0].isspace() and not CODE_START.match(line):
            break
        kept.append(line)
    for end in range(len(kept), 0, -1):
        candidate = "\n".join(kept[:end]).rstrip() + "\n"
        try:
            ast.parse(candidate)
            return candidate
        except SyntaxError:
            continue
    return "\n".join(kept) + "\n"


def extract_code(output: str, entry_point: str | None = None) -> str:
    """The code in a model's answer: the fenced block if there is one, else the answer,
    trimmed of trailing prose."""
    block = fenced_code(output, entry_point)
    return trim_to_code(block if block is not None else output)


def code_answer(output: str, doc: dict) -> str:
    """A code answer cleaned for scoring. For a function stub (a HumanEval-style `doc` with
    `prompt` and `entry_point`) it is what continues the stub: a complete definition of the
    entry point follows it on a new line, anything else is taken as the body; otherwise it
    is the extracted code."""
    stub, entry_point = doc.get("prompt"), doc.get("entry_point")
    if not (isinstance(stub, str) and isinstance(entry_point, str)):
        return extract_code(output)
    block = fenced_code(output, entry_point)
    code = output if block is None else block
    if re.search(rf"^(async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE):
        return "\n" + trim_to_code(code)
    solution = trim_to_code(stub + code)
    return solution[len(stub):] if solution.startswith(stub) else code
