"""Running generated code against its tests: one subprocess per sample, with limits.

Each program runs in a fresh ``python -I`` in its own temporary folder and process group,
with a wall-clock timeout, address-space, CPU-time and file-size limits (`resource`), no
network (a new network namespace where the kernel allows it, and in every case a guard
that replaces socket, subprocess and file-removal functions before the generated code
runs), and stdin closed. A sample passes only if the process exits 0 *and* prints a random
token that the harness writes after the tests, so ``sys.exit(0)`` or ``os._exit`` before
the tests fail that sample. This protects the scorer from accidents, not from malice.

Code post-processing lives here too, as the reference harness applies it to code answers
before scoring: fenced-block extraction and trimming prose after the code.
"""

from __future__ import annotations

import ast
import ctypes
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_MEMORY_BYTES = 2 << 30
OUTPUT_LIMIT_BYTES = 16 << 20
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000

# Runs before the generated code: refuse network, process and file-removal calls.
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


@dataclass(frozen=True)
class ExecutionResult:
    """Whether the program passed, and a short reason when it did not."""

    passed: bool
    reason: str


def _isolate_network() -> None:
    """Enter a new, empty network namespace (as root, or through a user namespace)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for flags in (CLONE_NEWNET, CLONE_NEWUSER | CLONE_NEWNET):
        if libc.unshare(flags) == 0:
            return


def _limit_child(memory_bytes: int, cpu_seconds: int) -> None:
    """Runs in the child between fork and exec; must not raise."""
    try:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_LIMIT_BYTES, OUTPUT_LIMIT_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        _isolate_network()
    except Exception:  # a limit the platform lacks is skipped, not fatal
        pass


def _tail(path: Path, size: int = 4096) -> str:
    with path.open("rb") as handle:
        handle.seek(max(path.stat().st_size - size, 0))
        return handle.read().decode("utf-8", errors="replace")


def run_program(
    program: str,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> ExecutionResult:
    """Run `program` (code followed by its tests) in a limited subprocess."""
    token = secrets.token_hex(16)
    source = f"{GUARD}\n{program}\n\nprint({token!r}, flush=True)\n"
    cpu_seconds = int(timeout_seconds) + 1
    with tempfile.TemporaryDirectory(prefix="d3-exec-") as folder:
        script, stdout, stderr = (Path(folder) / name for name in ("program.py", "out", "err"))
        script.write_text(source, encoding="utf-8")
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": folder,
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
        }
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-I", "-B", str(script)],
                cwd=folder,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=lambda: _limit_child(memory_bytes, cpu_seconds),
            )
            try:
                code = process.wait(timeout=timeout_seconds)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:  # the whole group: anything the program left behind goes too
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                code = process.wait()
        if timed_out:
            return ExecutionResult(False, f"timed out after {timeout_seconds:g} s")
        if code < 0:
            return ExecutionResult(False, f"killed by {signal.Signals(-code).name}")
        if code != 0:
            lines = _tail(stderr).strip().splitlines()
            return ExecutionResult(False, lines[-1] if lines else f"exit status {code}")
        if not _tail(stdout).rstrip().endswith(token):
            return ExecutionResult(False, "exited before the tests finished")
        return ExecutionResult(True, "passed")


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
