"""Run a command inside a built image as the kubelet runs a container (podman and `buildah run`
cannot set the pod's constraints here: podman fails on setrlimit in this sandbox).

The command runs in a private mount namespace (`unshare --mount`, so nothing is seen outside it)
chrooted into the image's root filesystem, which is bind-mounted read-only over itself
(`readOnlyRootFilesystem`), with /proc, the host's /dev, /etc/hosts and /etc/resolv.conf (as the
runtime provides them), and each volume bound at its mountPath (read-only unless writable, as
Kubernetes mounts configMap, secret and CSI volumes). It runs as the pod's uid:gid (chroot
--userspec) in the image's working directory, with exactly the environment given. Every step
execs the next, so the process started is the container's process: signals reach it directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Host-side tools by absolute path: the environment passed through is the container's.
_SCRIPT = r"""set -eu
root=$1; user=$2; workdir=$3; shift 3
/usr/bin/mount --bind "$root" "$root"
/usr/bin/mount -o remount,bind,ro "$root"
/usr/bin/mount -t proc proc "$root/proc"
/usr/bin/mount --rbind /dev "$root/dev"
/usr/bin/mount --bind /etc/hosts "$root/etc/hosts"
/usr/bin/mount --bind /etc/resolv.conf "$root/etc/resolv.conf"
while [ "$1" != -- ]; do
  /usr/bin/mount --bind "$1" "$root$2"
  if [ "$3" = ro ]; then /usr/bin/mount -o remount,bind,ro "$root$2"; fi
  shift 3
done
shift
exec /usr/sbin/chroot --userspec="$user" "$root" /usr/bin/env --chdir="$workdir" "$@"
"""


@dataclass(frozen=True)
class Bind:
    """A host path mounted at `target` in the container."""

    source: Path
    target: str
    writable: bool = False


RUNTIME_FILES = ("etc/hosts", "etc/resolv.conf")  # bound from this machine, as a container runtime does


def prepare(rootfs: Path, binds: list[Bind]) -> None:
    """Create what must exist in the image before it is mounted read-only (a runtime creates its
    mount points too): a directory for each directory volume, an empty file for each file bind."""
    targets = [(rootfs / name, False) for name in RUNTIME_FILES]
    targets += [(rootfs / bind.target.lstrip("/"), bind.source.is_dir()) for bind in binds]
    for path, is_dir in targets:
        if is_dir:
            path.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()


def container_argv(rootfs: Path, argv: list[str], *, binds: list[Bind], user: str, working_dir: str) -> list[str]:
    """The host command that runs `argv` in the image at `rootfs` (after `prepare`)."""
    if not argv:
        raise ValueError("a container needs a command")
    bind_args = [part for bind in binds for part in (str(bind.source), bind.target, "rw" if bind.writable else "ro")]
    return ["/usr/bin/unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", _SCRIPT, "container",
            str(rootfs), user, working_dir, *bind_args, "--", *argv]
