"""Where the learner's code runs while it is graded: a sandbox, another user, or not at all.

The grader never runs a submission's code in its own process. It starts
:mod:`attn_course.grading.learner` in one of these, the best this machine allows
(``attn-course doctor`` says which):

``bwrap``
    bubblewrap (https://github.com/containers/bubblewrap, Debian's ``bubblewrap``), the
    sandbox Flatpak uses: new user, PID, network, IPC, UTS and cgroup namespaces; a
    read-only view of the system libraries, the Python installation and the course
    package only (not the course's sources, the notebooks being graded, other
    submissions or the output folder); a private ``/tmp`` as its working directory; no
    network; and a PID namespace whose processes all die with it (``--die-with-parent``
    and the end of its init process), so nothing a notebook starts outlives its grading.
``user``
    where bubblewrap cannot run but the grader is root (a container that forbids user
    namespaces): the learner's process runs as an unprivileged user of its own (a uid
    from ``UID_BASE`` up), which cannot read the grader's files (the sources and the
    output folder must not be readable by others; the grader checks) and whose
    processes are all killed after grading (``kill(-1)`` as that user).
``none``
    the learner's process runs as the grader's own user with no isolation: only for
    trusted work (a learner checking their own notebook, or ``--no-sandbox``).

In every mode the learner's process has an address-space limit (``RLIMIT_AS``), a
file-size limit, no core dumps, and a limit on the number of processes: a ``pids``
cgroup where the grader is root and the cgroup file system is writable, else
``RLIMIT_NPROC`` counted above the processes the user already has.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

MODES = ("bwrap", "user", "none")
UID_BASE = 61000  # uids for the ``user`` mode: UID_BASE + job slot
PIDS_CGROUPS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup")  # v1, then v2


@dataclass(frozen=True)
class Isolation:
    mode: str
    detail: str  # a sentence for doctor and error messages


def _bwrap_args(workdir: str = "/tmp/work") -> list[str]:
    """bubblewrap's options: what the learner's process can see."""
    args = ["--unshare-all", "--die-with-parent", "--new-session", "--hostname", "sandbox",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", workdir,
            "--chdir", workdir, "--clearenv"]
    seen: set[str] = set()

    def bind(path: str) -> None:
        p = os.path.realpath(path)
        if not os.path.exists(p) or any(p == s or p.startswith(s + "/") for s in seen):
            return
        seen.add(p)
        args.extend(["--ro-bind", p, p])

    for top in ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        if os.path.islink(top):
            args.extend(["--symlink", os.readlink(top), top])
        elif os.path.isdir(top):
            bind(top)
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives",
                 "passwd", "group", "nsswitch.conf"):
        if os.path.exists(f"/etc/{name}"):
            args.extend(["--ro-bind", f"/etc/{name}", f"/etc/{name}"])
    # The Python installation, the environment and its packages: only what lies inside the
    # installation's prefixes (sys.path may also hold the current folder, a course checkout).
    prefixes = [os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)]
    for path in (*prefixes, os.path.dirname(os.path.realpath(sys.executable))):
        bind(path)
    for path in sys.path:
        real = os.path.realpath(path) if path else ""
        if real and os.path.isdir(real) and any(real.startswith(p + "/") for p in prefixes):
            bind(real)
    import attn_course

    bind(str(Path(attn_course.__file__).resolve().parent))  # an editable install's package
    return args


def learner_env() -> dict:
    from attn_course.grading.forkserver import KERNEL_ENV

    env = dict(KERNEL_ENV)
    env.update(HOME="/tmp", MPLCONFIGDIR="/tmp/matplotlib", PATH="/usr/bin:/bin",
               LANG="C.UTF-8", PYTHONNOUSERSITE="1")
    return env


@functools.lru_cache(maxsize=1)
def detect() -> Isolation:
    """The best isolation this machine allows (tried once per process)."""
    bwrap = shutil.which("bwrap")
    if bwrap:
        try:
            r = subprocess.run([bwrap, *_bwrap_args(), sys.executable, "-c", "print(42)"],
                               capture_output=True, timeout=60, env=learner_env())
            if r.returncode == 0 and r.stdout.strip() == b"42":
                return Isolation("bwrap", f"bubblewrap sandbox ({bwrap})")
            why = (r.stderr.decode(errors="replace").strip().splitlines() or ["failed"])[-1]
        except (OSError, subprocess.TimeoutExpired) as exc:
            why = str(exc)
        bwrap_note = f"bubblewrap is installed but cannot create a sandbox here ({why})"
    else:
        bwrap_note = "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    if os.geteuid() == 0:
        why = _user_mode_problem()
        if not why:
            return Isolation("user", f"an unprivileged user per job ({bwrap_note})")
        return Isolation("none", f"no isolation: {bwrap_note}, and {why}")
    return Isolation("none", f"no isolation: {bwrap_note}, and the grader is not root, so it "
                             f"cannot run learners' code as another user")


def _user_mode_problem() -> str:
    """Why Python cannot run as the ``user`` mode's uid here ("" when it can)."""
    import attn_course

    env = learner_env()
    env["PYTHONPATH"] = str(Path(attn_course.__file__).resolve().parents[1])
    try:
        r = subprocess.run([sys.executable, "-c", "import attn_course; print(42)"], user=UID_BASE,
                           group=UID_BASE, extra_groups=[], capture_output=True, timeout=60,
                           env=env, cwd="/")
    except (OSError, subprocess.SubprocessError) as exc:
        return f"Python cannot be started as an unprivileged user ({exc})"
    if r.returncode != 0 or r.stdout.strip() != b"42":
        return (f"an unprivileged user cannot run this Python ({sys.executable}: is it under a "
                f"folder only root may read, such as /root?)")
    return ""


# -- the process-count limit ---------------------------------------------------------

class PidsCgroup:
    """A ``pids`` cgroup of its own for one learner process tree (root only), or None."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def create(cls, limit: int) -> PidsCgroup | None:
        if os.geteuid() != 0:
            return None
        for base in PIDS_CGROUPS:
            b = Path(base)
            if not (b / "cgroup.procs").exists() or not os.access(b, os.W_OK):
                continue
            controllers = b / "cgroup.controllers"  # cgroup v2: pids must be enabled
            if controllers.exists() and "pids" not in controllers.read_text(errors="replace"):
                continue
            path = b / f"attn-grade-{uuid.uuid4().hex[:12]}"
            try:
                path.mkdir()
                (path / "pids.max").write_text(str(limit))
                return cls(path)
            except OSError:
                try:
                    path.rmdir()
                except OSError:
                    pass
        return None

    def enter(self) -> None:
        """In the child, before exec: join the cgroup."""
        with open(self.path / "cgroup.procs", "w") as f:
            f.write(str(os.getpid()))

    def close(self) -> None:
        procs = self.path / "cgroup.procs"
        for _ in range(50):
            try:
                pids = [int(p) for p in procs.read_text().split()]
            except OSError:
                pids = []
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                self.path.rmdir()
                return
            except OSError:
                import time

                time.sleep(0.05)


def user_process_count() -> int:
    """How many processes (threads count too, for RLIMIT_NPROC) this user has now."""
    uid, n = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = os.stat(f"/proc/{entry}")
                if st.st_uid == uid:
                    n += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                pass
    return n


def kill_user(uid: int) -> None:
    """Kill every process of ``uid`` (``user`` mode's clean-up): a child that becomes
    ``uid`` and signals all processes it may signal, which are exactly that user's."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            for _ in range(3):
                try:
                    os.kill(-1, signal.SIGKILL)
                except OSError:
                    pass
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def require_private(paths, mode: str) -> None:
    """In ``user`` mode, the learner's user must not read the sources or the results:
    raise PermissionError naming the first path that others can read."""
    if mode != "user":
        return
    for p in paths:
        p = Path(p)
        if p.exists() and p.stat().st_mode & 0o044:
            raise PermissionError(
                f"{p} can be read by other users, so the learners' code could read it while it "
                f"is graded (no bubblewrap sandbox here, so it runs as another user): run "
                f"`chmod -R go-rwx {p}` first, or install bubblewrap")
