"""The launcher that runs one generated program isolated by the operating system.

`execution.run_program` starts ``python -I -S sandbox.py CONFIG`` (CONFIG: a dict, marshalled
and hex-encoded, for the same interpreter; standard library only, as with -I nothing of d3 is
importable). The launcher forks the program's process, waits for it, ends everything it
left behind, and exits as the program did. How much it isolates is CONFIG's ``mode``:

- ``namespaces``: the launcher enters new mount, PID, network, IPC and UTS namespaces (and a
  user namespace when it is not root), so the program is PID 1 of its own PID namespace:
  it cannot see or signal any other process, and when it exits the kernel ends every
  process it started. Its file system is a read-only tmpfs that holds only read-only binds
  of the Python installation and the system libraries, a few device nodes, a fresh /proc,
  and its folder: a fresh size-limited tmpfs. As root it then runs as a throwaway uid.
- ``uid`` (root without namespaces): the program runs as a throwaway uid in its own
  session; afterwards every process of that uid is killed.
- ``limits``: resource limits and its own session only.

In every mode the hard resource limits equal the soft ones, so the program cannot raise
them again, and ``no_new_privs`` is set. A setup step that fails fails the sample
("sandbox setup failed: ..."): the launcher never runs a program less isolated than asked.
"""

from __future__ import annotations

import ctypes
import marshal
import os
import resource
import signal
import sys
import time

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
# A mount's flags that a user namespace may not clear on a bind of it (statvfs → mount).
LOCKED_FLAGS = {os.ST_NOEXEC: MS_NOEXEC, os.ST_NOATIME: MS_NOATIME,
                os.ST_NODIRATIME: MS_NODIRATIME, os.ST_RELATIME: MS_RELATIME}
SETUP_FAILED = 126
LINUX = sys.platform.startswith("linux")  # elsewhere only the `limits` mode runs

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]


def check(result: int, what: str) -> None:
    """Raise OSError naming `what` when a libc call returned -1."""
    if result == -1:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


def encode(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def mount(source: str | None, target: str | None, kind: str | None, flags: int,
          data: str | None = None) -> None:
    check(libc.mount(encode(source), encode(target), encode(kind), flags, encode(data)),
          f"mount {target or source}")


def write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


# --- namespaces and the program's file system -----------------------------------------------


def enter_namespaces(config: dict) -> None:
    """New mount, PID, network, IPC and UTS namespaces (the PID one for the next child); as
    a user other than root, in a new user namespace that maps only that user."""
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    uid, gid = os.getuid(), os.getgid()
    if uid != 0:
        flags |= CLONE_NEWUSER
    check(libc.unshare(flags), "unshare")
    if uid != 0:
        write_file("/proc/self/setgroups", b"deny")
        write_file("/proc/self/uid_map", f"{uid} {uid} 1".encode())
        write_file("/proc/self/gid_map", f"{gid} {gid} 1".encode())


def bind(source: str, target: str, flags: int) -> None:
    """Bind `source` on `target` (made to match it), then apply `flags` to the bind."""
    if os.path.isdir(source):
        os.makedirs(target, 0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        open(target, "a").close()
    mount(source, target, None, MS_BIND)
    locked = os.statvfs(source).f_flag
    flags |= sum(flag for stat_flag, flag in LOCKED_FLAGS.items() if locked & stat_flag)
    mount(None, target, None, MS_REMOUNT | MS_BIND | flags)


def build_root(config: dict) -> None:
    """Make the program's file system and switch to it (in the new namespaces)."""
    root, work = config["staging"], config["work"]
    source = open(os.path.join(work, "program.py"), "rb").read()
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates to the host
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for path in config["binds"]:
        if os.path.islink(path):  # /lib -> usr/lib on merged-/usr systems
            os.symlink(os.readlink(path), root + path)
        elif os.path.exists(path):
            bind(path, root + path, MS_RDONLY | MS_NOSUID | MS_NODEV)
    for device in config["devices"]:
        bind(device, root + device, MS_NOSUID | MS_NOEXEC)
    owner = "" if config["uid"] is None else f",uid={config['uid']},gid={config['uid']}"
    os.makedirs(root + work, 0o755)
    mount("tmpfs", root + work, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
          f"size={config['folder_bytes']},nr_inodes=4096,mode=700{owner}")
    write_file(root + work + "/program.py", source)
    if config["uid"] is not None:
        os.chown(root + work + "/program.py", config["uid"], config["uid"])
    os.mkdir(root + "/proc")
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.mkdir(root + "/.old")
    check(libc.syscall(PIVOT_ROOT[os.uname().machine], os.fsencode(root),
                       os.fsencode(root + "/.old")), "pivot_root")
    os.chdir("/")
    check(libc.umount2(b"/.old", MNT_DETACH), "umount the host's root")
    os.rmdir("/.old")
    mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    check(libc.sethostname(b"sandbox", 7), "sethostname")  # its own UTS namespace


# --- the program's process ------------------------------------------------------------------


def limit(limits: dict[str, int]) -> None:
    """Set each limit, hard and soft alike, so that the program cannot raise it again."""
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, f"RLIMIT_{name}"), (value, value))


def drop_privileges(uid: int | None) -> None:
    """Become `uid` (no groups) when given; in any case gain no privileges by exec."""
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    if LINUX:
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def isolate_network() -> None:
    """Outside `namespaces` mode, try an empty network namespace on its own."""
    for flags in (CLONE_NEWNET, CLONE_NEWUSER | CLONE_NEWNET):
        if libc.unshare(flags) == 0:
            return


def start_program(config: dict) -> None:
    """In the forked child: isolate, limit, drop privileges, exec the program."""
    if config["mode"] == "namespaces":
        build_root(config)
    elif LINUX:
        isolate_network()
    os.setsid()  # its own session and group: kill(0, ...) reaches only its own processes
    limit(config["limits"])
    drop_privileges(config["uid"])
    if LINUX:
        check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "parent-death signal")
    os.chdir(config["work"])
    os.closerange(3, 1 << 16)
    python = config["python"]
    os.execve(python, [python, "-I", "-B", "program.py"], config["env"])


# --- the launcher ---------------------------------------------------------------------------


def end_everything(config: dict, child: int) -> None:
    """Kill the program and whatever it started: its PID namespace dies with it; a
    throwaway uid's processes are all killed; otherwise its process group."""
    try:
        if config["mode"] == "namespaces":
            os.kill(child, signal.SIGKILL)
        elif config["uid"] is not None:
            kill_uid(config["uid"])
        else:
            os.killpg(child, signal.SIGKILL)
    except ProcessLookupError:  # already gone
        pass


def kill_uid(uid: int) -> None:
    """Kill every process of `uid`, from a child that takes that uid: kill(-1) then
    reaches exactly those (repeated while new ones appear)."""
    killer = os.fork()
    if killer == 0:
        os.setresuid(uid, uid, uid)
        for _ in range(100):
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                os._exit(0)
            time.sleep(0.005)
        os._exit(0)
    os.waitpid(killer, 0)


def exit_as(status: int) -> None:
    """Exit with the program's code, or die of its signal (without a core dump)."""
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        os._exit(code)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
    os._exit(128 - code)


def main(config: dict) -> None:
    """Fork the program, wait for it (ending it on SIGTERM or after its time), clean up."""
    child = 0

    def stop(*_: object) -> None:
        if child:
            end_everything(config, child)
        else:  # asked to stop before the program started
            os._exit(SETUP_FAILED)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, stop)  # if the scorer is gone, the time limit still holds
    signal.setitimer(signal.ITIMER_REAL, config["timeout"] + 1)
    try:
        if config["mode"] == "namespaces":
            enter_namespaces(config)
        child = os.fork()
    except OSError as error:
        sys.stderr.write(f"sandbox setup failed: {error}\n")
        os._exit(SETUP_FAILED)
    if child == 0:
        try:
            start_program(config)
        except BaseException as error:  # noqa: BLE001 (reported as the sample's reason)
            os.write(2, f"sandbox setup failed: {error}\n".encode())
        os._exit(SETUP_FAILED)
    _, status = os.waitpid(child, 0)
    signal.setitimer(signal.ITIMER_REAL, 0)
    if config["mode"] != "namespaces":
        end_everything(config, child)
    exit_as(status)


if __name__ == "__main__":
    main(marshal.loads(bytes.fromhex(sys.argv[1])))
