"""Checks an strace log of a cabinetd run against the sandbox of systemd/cabinetd.service.

    python sandbox_check.py TRACE GROUPS STATE_DIR

TRACE: `strace -f -qq -y -o TRACE cabinetd run …` output, run from / (like systemd). GROUPS: `systemd-analyze syscall-filter`
output (the syscall groups of the systemd version that will enforce the filter). STATE_DIR: the
only directory the service may write (StateDirectory=; ProtectSystem=strict makes the rest
read-only, PrivateTmp=yes gives a private /tmp).

Checked, as the unit enforces them:
  SystemCallFilter=@system-service + ~@privileged @resources   every syscall made is allowed
  RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6              every socket() family
  ProtectSystem=strict                                           files opened for writing, mkdir,
                                                                 rename, unlink under STATE_DIR
                                                                 or /tmp (or /dev/null)
  ProcSubset=pid, ProtectProc=invisible                          /proc paths are the process's own
"""

import re
import sys


def syscall_groups(path):
    groups, cur = {}, None
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            s = line.strip()
            if re.fullmatch(r"@[\w-]+", s) and not line.startswith(" "):
                cur = s
                groups[cur] = []
            elif cur and s and not s.startswith("#"):
                groups[cur].append(s)

    def expand(name, seen=()):
        out = set()
        for x in groups.get(name, []):
            if x.startswith("@"):
                if x not in seen:
                    out |= expand(x, seen + (name,))
            else:
                out.add(x)
        return out

    if "@system-service" not in groups:
        sys.exit(f"{path}: no @system-service group (not systemd-analyze syscall-filter output?)")
    allowed = expand("@system-service") - expand("@privileged") - expand("@resources")
    return allowed


WRITE_FLAGS = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND")


def resolved_paths(args):
    """Absolute paths named by a syscall's arguments (strace -y shows fds as N</path>).

    Relative paths against AT_FDCWD resolve against "/": the unit sets no WorkingDirectory=, so
    the trace must come from a run started in /.
    """
    out = []
    for m in re.finditer(r'(?:(AT_FDCWD|\d+<([^>]*)>),\s*)?"([^"]*)"', args):
        dirfd, dirpath, path = m.groups()
        if path.startswith("/"):
            out.append(path)
        elif dirpath:
            out.append(dirpath.rstrip("/") + "/" + path)
        else:
            out.append("/" + path)
    return out


def main(trace, groups, state_dir):
    allowed = syscall_groups(groups)
    state_dir = state_dir.rstrip("/")
    used, errors = set(), []
    pids = set()
    writable = (state_dir + "/", "/tmp/", "/dev/null", "/dev/shm/")
    with open(trace, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            m = re.match(r"(\d+)\s+([a-z_0-9]+)\((.*)", line)
            if not m:
                continue
            pid, name, rest = m.groups()
            pids.add(pid)
            used.add(name)
            if name == "socket":
                fam = rest.split(",", 1)[0].strip()
                if fam not in ("AF_UNIX", "AF_INET", "AF_INET6"):
                    errors.append(f"socket({fam}) is outside RestrictAddressFamilies: {line.strip()}")
            paths = resolved_paths(rest)
            if name in ("open", "openat", "openat2", "creat") and paths:
                if name == "creat" or WRITE_FLAGS.search(rest):
                    if not paths[0].startswith(writable) and paths[0] != state_dir:
                        errors.append(f"write outside the state dir (ProtectSystem=strict): {line.strip()}")
            if name in ("mkdir", "mkdirat", "rename", "renameat", "renameat2", "unlink", "unlinkat",
                        "rmdir", "link", "linkat", "symlink", "symlinkat") and paths:
                for p in paths:
                    if not p.startswith(writable) and p != state_dir:
                        errors.append(f"{name} outside the state dir (ProtectSystem=strict): {line.strip()}")
            for p in paths:
                pm = re.match(r"/proc/([^/]+)", p)
                if pm and pm.group(1) not in ("self", "thread-self") and pm.group(1) not in pids:
                    errors.append(f"/proc path beyond the process (ProcSubset=pid): {line.strip()}")
    if not used:
        sys.exit(f"{trace}: no syscalls parsed (empty or not strace -f output)")
    denied = sorted(used - allowed)
    for name in denied:
        errors.append(f"syscall {name} is not allowed by SystemCallFilter=@system-service ~@privileged @resources")
    print(f"  {len(used)} distinct syscalls, all allowed" if not denied else f"  {len(used)} distinct syscalls")
    for e in dict.fromkeys(errors):
        print(f"  FAIL {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
