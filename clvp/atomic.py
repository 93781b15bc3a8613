"""All-or-nothing saves: a folder (or one file) is either its old content or its new one, never a mix.

``atomic_folder(target)`` hands out a temporary folder BESIDE the target (same parent, so the same
filesystem), named ``.<name>.saving-<pid>-<random>``. The save writes its files there. On success:

1. the target's entries that the save neither wrote nor ``drop``-ped (a model folder's tokenizer and
   preprocessor files, say) are hard-linked (copied where links fail) into the temporary folder;
2. every file and folder in it, and the parent, are fsync-ed;
3. the two folders are swapped: on Linux with ``renameat2(RENAME_EXCHANGE)``, one atomic step; where
   that is missing (no glibc wrapper, an old kernel, a filesystem without it) by rename-aside then
   rename-in (see ``_swap`` for that window). A new target is a single rename;
4. the old content, now in the temporary folder, is deleted.

On an exception, the temporary folder is deleted and the target is untouched. A process killed
part-way leaves the target as it was plus the temporary folder, which the next save of that target
removes (its pid no longer alive and its lock free). Saves nested inside one another (the model's
save writes its config with the config's save) write straight into the outer temporary folder and
commit once, with it.

A target that is itself a mount point cannot be swapped (its parent is another filesystem): there
the new files are staged inside it and moved in one by one, each file atomic but not the set; a
warning says so.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import secrets
import shutil
import stat
import threading
import warnings
from pathlib import Path
from typing import Iterable, Iterator

__all__ = ["atomic_folder", "atomic_write_text", "check_target", "exchange_supported"]

_SAVING = ".saving-"
_ASIDE = ".replaced-"
_ACTIVE: dict[str, "_Save"] = {}  # temporary folder -> the save that owns it (for nested saves)
_ACTIVE_LOCK = threading.Lock()


# ------------------------------------------------------------------------------ the user's errors
def check_target(target: str | os.PathLike) -> Path:
    """The absolute target folder, its missing ancestors created; ValueError / OSError naming the path
    when it cannot be saved into (a file, an unwritable parent), before any work is done."""
    path = Path(os.path.abspath(os.fspath(target)))
    if path.is_symlink():
        path = Path(os.path.realpath(path))  # save where the link points, keep the link
    if path.exists() and not path.is_dir():
        raise ValueError(f"save directory {str(path)!r} is a file, not a directory")
    if path.parent == path:
        raise ValueError(f"cannot save into {str(path)!r}: a filesystem root has no parent folder to stage in")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ValueError(f"cannot save into {str(path)!r}: a part of its parent {str(parent)!r} is a file") from None
    except NotADirectoryError:
        raise ValueError(f"cannot save into {str(path)!r}: a part of its parent {str(parent)!r} is a file") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"cannot save into {str(path)!r}: its parent folder is not writable "
                                            "(a save stages its files beside the target)", str(parent))
    return path


# ------------------------------------------------------------------------------ the swap
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2 = None
if os.name == "posix":
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        _renameat2 = getattr(_libc, "renameat2", None)  # glibc >= 2.28
        if _renameat2 is not None:
            _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            _renameat2.restype = ctypes.c_int
    except (OSError, AttributeError):
        _renameat2 = None
_exchange_works = _renameat2 is not None


def exchange_supported() -> bool:
    """Whether the atomic folder exchange is (still believed) available here."""
    return _exchange_works


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False where the OS or filesystem cannot (caller falls back)."""
    global _exchange_works
    if not _exchange_works:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        if err == errno.ENOSYS:
            _exchange_works = False  # the kernel has no renameat2: do not try again
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}", str(b))


def _swap(tmp: Path, target: Path) -> Path | None:
    """Put ``tmp`` in place of ``target``; -> where the old content now is (None for a new target)."""
    if not os.path.lexists(target):
        try:
            os.rename(tmp, target)  # a new target: one rename
            return None
        except OSError as err:  # the target appeared meanwhile (an empty one is replaced by rename)
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    if _exchange(tmp, target):
        return tmp
    # Fallback: rename the target aside, then the new folder in. Between the two renames (two system
    # calls, microseconds apart) the target does not exist: a reader then sees "no such folder", never
    # a mix. A process killed right there leaves the old content at ``.<name>.replaced-<pid>-...``;
    # the next save of this target renames it back before doing anything else.
    aside = target.parent / f".{target.name}{_ASIDE}{os.getpid()}-{secrets.token_hex(4)}"
    os.rename(target, aside)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(aside, target)
        raise
    return aside


# ------------------------------------------------------------------------------ helpers
def _fsync_path(path: Path, directory: bool) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:
            return  # Windows cannot open folders; its renames are journaled anyway
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            if not p.is_symlink() and p.is_file():
                _fsync_path(p, directory=False)
        _fsync_path(Path(dirpath), directory=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True  # never guess on Windows (os.kill there terminates): leave the folder
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # alive, someone else's
    return True


def _lock(fd: int, blocking: bool) -> bool:
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except OSError:
        return False


def _stale(path: Path, pid: int) -> bool:
    """A leftover of a killed save: its pid is not alive here and nobody holds its lock (the lock also
    covers a save from another pid namespace on this machine)."""
    if _pid_alive(pid):
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return not path.is_dir()  # a temporary file: the pid check is all there is
    try:
        return _lock(fd, blocking=False)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _clean_leftovers(target: Path) -> None:
    """Remove the temporary folders/files of earlier killed saves of ``target``; put back an old
    folder that a killed fallback swap left aside while the target is missing."""
    pattern = re.compile(re.escape(f".{target.name}") + r"(\.saving-|\.replaced-)(\d+)-[0-9a-f]+$")
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or not _stale(Path(entry.path), int(m.group(2))):
            continue
        if m.group(1) == _ASIDE and not os.path.lexists(target):
            with contextlib.suppress(OSError):
                os.rename(entry.path, target)  # the old content, restored
            continue  # never delete the only copy of the old content
        _remove(Path(entry.path))


def _link_or_copy_tree(src: Path, dst: Path) -> None:
    """Recreate ``src`` at ``dst``: files hard-linked (copied where links fail), links as links."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        os.mkdir(dst)
        shutil.copystat(src, dst)
        for child in os.scandir(src):
            _link_or_copy_tree(Path(child.path), dst / child.name)
    else:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)


def _mountinfo() -> set[str]:
    """The mount points Linux lists (bind mounts included, which ``os.path.ismount`` can miss)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    unescape = lambda p: re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), p)  # noqa: E731
    return {unescape(line.split()[4]) for line in lines if len(line.split()) > 4}


def _is_mount_point(path: Path) -> bool:
    """A folder that cannot be renamed: a mount point (its own or a bind mount)."""
    real = os.path.realpath(path)
    return (os.path.ismount(real) or Path(real).stat().st_dev != Path(real).parent.stat().st_dev
            or real in _mountinfo())


def _mount_points_inside(target: Path) -> list[str]:
    dev, real = target.stat().st_dev, os.path.realpath(target)
    found = {m for m in _mountinfo() if m.startswith(real + os.sep)}
    for dirpath, dirnames, _ in os.walk(target):
        for name in list(dirnames):
            p = Path(dirpath) / name
            if not p.is_symlink() and (p.stat().st_dev != dev or os.path.ismount(p)):
                found.add(str(p))
                dirnames.remove(name)
    return sorted(found)


# ------------------------------------------------------------------------------ the save
class _Save:
    def __init__(self, target: Path, tmp: Path, in_place: bool):
        self.target, self.tmp, self.in_place = target, tmp, in_place
        # made by os.mkdir(0o777): its mode is what the umask lets a new folder have
        self.new_dir_mode = stat.S_IMODE(tmp.stat().st_mode)
        self.drop: set[str] = set()
        self.drop_fns: list = []

    def dropped(self) -> set[str]:
        out = set(self.drop)
        for fn in self.drop_fns:
            out |= set(fn(self.target))
        return out


def _active_for(path: Path) -> _Save | None:
    with _ACTIVE_LOCK:
        return _ACTIVE.get(os.path.realpath(path))


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike, drop: Iterable[str] = (), drop_fn=None) -> Iterator[Path]:
    """Save into ``target`` all or nothing: write the files into the yielded folder.

    ``drop``: names (in the target's top level) that this save replaces and that must not survive
    it even when the save does not write them; ``drop_fn(target) -> names``: the same, computed from
    the old content (a sharded index's shards, say). Everything else already in the target that the
    save does not write is kept."""
    outer = _active_for(Path(os.path.abspath(os.fspath(target))))
    if outer is not None:  # nested: write into the outer save's folder, committed with it
        outer.drop.update(drop)
        if drop_fn is not None:
            outer.drop_fns.append(drop_fn)
        yield outer.tmp
        return

    path = check_target(target)
    existed = path.is_dir()
    in_place = existed and _is_mount_point(path)
    if existed and not in_place:
        mounts = _mount_points_inside(path)
        if mounts:
            raise ValueError(f"cannot save into {str(path)!r} atomically: it holds mount point(s) "
                             f"{', '.join(mounts[:3])}; save into a folder without them")
    stage_in = path if in_place else path.parent
    _clean_leftovers(path if not in_place else stage_in / path.name)
    existed = path.is_dir()  # a killed fallback swap's old folder may just have been put back
    tmp = stage_in / f".{path.name}{_SAVING}{os.getpid()}-{secrets.token_hex(4)}"
    os.mkdir(tmp, 0o777)  # the umask applies, as for any new folder
    try:
        lock_fd = os.open(tmp, os.O_RDONLY)
        _lock(lock_fd, blocking=True)  # held for the whole save: tells other processes it is live
        save = _Save(path, tmp, in_place)
    except BaseException:
        _remove(tmp)
        raise
    save.drop.update(drop)
    if drop_fn is not None:
        save.drop_fns.append(drop_fn)
    key = os.path.realpath(tmp)
    with _ACTIVE_LOCK:
        _ACTIVE[key] = save
    old = None
    try:
        try:
            yield tmp
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.pop(key, None)
        if in_place:
            _commit_in_place(save)
        else:
            old = _commit(save, existed)
    except BaseException:
        os.close(lock_fd)
        lock_fd = -1
        _remove(tmp)
        raise
    finally:
        if lock_fd >= 0:
            os.close(lock_fd)
    if old is not None:
        _remove(old)


def _normal_permissions(save: _Save, names: Iterable[str]) -> None:
    """Give the files the save wrote the permissions ``open()`` gives (0o666 & ~umask): some writers
    make theirs 0o600 (safetensors does, as ``tempfile.mkstemp`` would), which would lock out the
    group and others that could read the folder's earlier files."""
    file_mode, dir_mode = save.new_dir_mode & 0o666, save.new_dir_mode
    for name in names:
        top = save.tmp / name
        for p in [top, *(top.rglob("*") if top.is_dir() and not top.is_symlink() else ())]:
            if p.is_symlink():
                continue
            os.chmod(p, dir_mode if p.is_dir() else file_mode)


def _commit(save: _Save, existed: bool) -> Path | None:
    tmp, target = save.tmp, save.target
    written = set(os.listdir(tmp))
    _normal_permissions(save, written)
    if existed:
        dropped = save.dropped()
        for entry in os.scandir(target):
            if entry.name not in written and entry.name not in dropped:
                _link_or_copy_tree(Path(entry.path), tmp / entry.name)
        os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))  # the folder keeps its permissions
    _fsync_tree(tmp)
    _fsync_path(target.parent, directory=True)
    cwd = None
    with contextlib.suppress(OSError):
        cwd = os.getcwd()
    old = _swap(tmp, target)
    with contextlib.suppress(OSError):  # the save is done: what follows must not report it failed
        _fsync_path(target.parent, directory=True)
        real = os.path.realpath(target)
        if old is not None and cwd is not None and (cwd == real or cwd.startswith(real + os.sep)):
            # this process's working folder was the old one: follow the save to the new one
            rel = os.path.relpath(cwd, real)
            os.chdir(target / rel if (target / rel).is_dir() else target)
    return old


def _commit_in_place(save: _Save) -> None:
    """A mount-point target: move the staged files in one by one (each atomic), then drop the stale."""
    warnings.warn(f"{save.target} is a mount point, so it cannot be swapped as a whole: its files are "
                  "replaced one by one (each atomically); a crash part-way can leave a mix", RuntimeWarning,
                  stacklevel=4)
    tmp, target = save.tmp, save.target
    written = set(os.listdir(tmp))
    _normal_permissions(save, written)
    dropped = save.dropped() - written
    _fsync_tree(tmp)
    for name in sorted(written):
        if (target / name).is_dir() and not (target / name).is_symlink():
            shutil.rmtree(target / name)
        os.replace(tmp / name, target / name)
    for name in dropped:
        _remove(target / name)
    _fsync_path(target, directory=True)
    _remove(tmp)


# ------------------------------------------------------------------------------ one file
def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write a text file all or nothing: a temporary file beside it, fsync-ed, then renamed over it.
    Inside an ``atomic_folder`` the file is simply written (the folder commits it)."""
    path = Path(os.path.abspath(os.fspath(path)))
    if _active_for(path.parent) is not None:
        with open(path, "w", encoding=encoding) as f:
            f.write(text)
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))  # write where the link points, as open() would; keep the link
    if path.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: it is a folder")
    _clean_leftovers(path)
    tmp = path.parent / f".{path.name}{_SAVING}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "x", encoding=encoding) as f:  # open(): 0o666 & ~umask, as a plain write gives
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_path(path.parent, directory=True)

