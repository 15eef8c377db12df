//! What a valid configuration names on this machine: secrets, certificates, serial lines and the
//! state directory — checked as the user the daemon runs as (issue 14 item 2).
//!
//! `check-config` and `run` use the same checks, so a configuration that passes `check-config`
//! does not make `run` fail on a file (exit 78, which systemd does not restart on, instead of 1):
//!
//! | key | must |
//! |---|---|
//! | `uplink.password_file`, `camera[…].password_file`, `uplink.key_file` | exist, be a file, be readable; a warning when every user may read it |
//! | `uplink.ca_file`, `uplink.cert_file` | exist, be a file, be readable |
//! | `dali[…].port` (`atx-hat`), `modbus[…].address` (`rtu`) | exist, be readable and writable (in `run` only a warning: a USB line may come back, the device is down meanwhile) |
//! | `storage.path` | be a directory the user may write (its store files too), or be creatable |
//!
//! Invariants:
//! - "readable by the user" is decided from the owner, group and mode bits of the file and the
//!   search bits of every directory above it, for the user's uid, primary group and supplementary
//!   groups (`getgrouplist`): root may do anything. POSIX ACLs are not read (a file that only an
//!   ACL opens is reported as not readable: the message says so).
//! - Paths systemd provides when the unit starts are not required to exist outside it:
//!   `/run/credentials/…` (`LoadCredential=`) and the unit's `StateDirectory=` (`/var/lib/cabinetd`).
//! - Every finding names its key and points at the value, `FILE:LINE:COL` (the default of a key
//!   that is not written points at its table, or the start of the first file).
//! - Nothing here writes: a directory is "creatable" when its nearest existing ancestor is
//!   writable and searchable by the user.

use std::ffi::CString;
use std::fs::Metadata;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

use super::tree::{self, Loc, Table, Val};
use super::{Config, ConfigError, DaliInterface, Transport};

/// The user the packaged unit runs as (`User=cabinetd`, `systemd/cabinetd.sysusers`).
pub const SERVICE_USER: &str = "cabinetd";
/// The unit's `StateDirectory=cabinetd`: systemd creates it, owned by the service user.
pub const UNIT_STATE_DIRECTORY: &str = "/var/lib/cabinetd";
/// Where systemd puts `LoadCredential=` files of the unit when it starts.
const CREDENTIALS_PREFIX: &str = "/run/credentials/";
/// Largest secret file read (a password is a line; anything bigger is the wrong file).
pub const MAX_SECRET_BYTES: u64 = 4096;

/// Reads a secret file: at most [`MAX_SECRET_BYTES`], UTF-8, one trailing line break removed,
/// not empty. The error says why, never what the file holds.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(format!(
            "is larger than {MAX_SECRET_BYTES} bytes (a password file holds one line)"
        ));
    }
    let mut text = String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_owned())?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err("is empty".into());
    }
    Ok(text)
}

/// Who the files are checked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name (or the uid as text when it has no name).
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// Every group the user is in (primary included).
    pub groups: Vec<u32>,
    /// Why this user: "the service user", "the current user", "--as-user".
    pub why: &'static str,
}

/// The supplementary groups of this process, from the `Groups:` line of `/proc/self/status`.
///
/// Not `getgroups(2)` through nix: nix sizes its buffer with `sysconf(_SC_NGROUPS_MAX)`, which
/// glibc answers by reading `/proc/sys/kernel/ngroups_max` — outside the unit's
/// `ProcSubset=pid`, so `run` under systemd would touch a path its sandbox hides
/// (tests/ship/sandbox_check.sh flags it). `/proc/self` is inside the subset.
fn supplementary_groups_of_this_process() -> Vec<u32> {
    std::fs::read_to_string("/proc/self/status")
        .map(|status| parse_status_groups(&status))
        .unwrap_or_default()
}

fn parse_status_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|list| {
            list.split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Identity {
    /// The process's effective user and groups (what `run` can open).
    pub fn current() -> Identity {
        let uid = nix::unistd::geteuid();
        let gid = nix::unistd::getegid();
        let mut groups = supplementary_groups_of_this_process();
        groups.push(gid.as_raw());
        groups.sort_unstable();
        groups.dedup();
        let name = User::from_uid(uid)
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name);
        Identity {
            name,
            uid: uid.as_raw(),
            gid: gid.as_raw(),
            groups,
            why: "the current user",
        }
    }

    /// A user by name, with the groups the system gives it (`getgrouplist`).
    pub fn user(name: &str) -> Result<Identity, String> {
        let user = User::from_name(name)
            .map_err(|e| format!("cannot look up user {name:?}: {e}"))?
            .ok_or_else(|| format!("no user {name:?} on this system"))?;
        let cname = CString::new(name).map_err(|_| format!("bad user name {name:?}"))?;
        let mut groups: Vec<u32> = nix::unistd::getgrouplist(&cname, user.gid)
            .map_err(|e| format!("cannot list the groups of {name:?}: {e}"))?
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        groups.push(user.gid.as_raw());
        groups.sort_unstable();
        groups.dedup();
        Ok(Identity {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
            why: "--as-user",
        })
    }

    /// Whom `check-config` checks for by default: as root, the service user when it exists
    /// (root itself can open anything, which proves nothing about the unit); otherwise the
    /// current user.
    pub fn for_check() -> Identity {
        if nix::unistd::geteuid().is_root() {
            if let Ok(mut id) = Identity::user(SERVICE_USER) {
                id.why = "the service user of the packaged unit";
                return id;
            }
            let mut id = Identity::current();
            id.why = "the current user: no `cabinetd` user exists here (the package creates it)";
            return id;
        }
        Identity::current()
    }

    fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// `user cabinetd (uid 998)`.
    pub fn describe(&self) -> String {
        format!("user {} (uid {})", self.name, self.uid)
    }
}

/// Whether the checks run for `check-config` or at the start of `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `check-config`: everything is an error that `run` would trip on, missing lines included;
    /// what systemd provides at the unit's start is not required.
    Check,
    /// `run` (under systemd or by hand): a missing or closed serial line is a warning (the
    /// device is reported down and retried); everything else is an error.
    Run,
}

/// One finding, at the value it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// An error stops `run` (exit 78) and fails `check-config`; otherwise a warning.
    pub fatal: bool,
    /// `FILE:LINE:COL: key "path" …` (warnings start with `warning:`).
    pub at: ConfigError,
}

/// The findings, in file then position order, and what was left to systemd.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// Errors (what `run` would fail on) and warnings (world-readable secrets, a serial line
    /// absent in `run`).
    pub findings: Vec<Finding>,
    /// What was not checked and why (paths systemd provides at start).
    pub notes: Vec<String>,
}

impl FileReport {
    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &ConfigError> {
        self.findings.iter().filter(|f| f.fatal).map(|f| &f.at)
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &ConfigError> {
        self.findings.iter().filter(|f| !f.fatal).map(|f| &f.at)
    }

    /// How many errors.
    pub fn error_count(&self) -> usize {
        self.errors().count()
    }
}

/// What a referenced path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A password file: a secret `run` reads with [`read_secret`] (one line, at most
    /// [`MAX_SECRET_BYTES`], not empty), so its contents are checked the same way.
    Password,
    /// A secret file (a TLS key: PEM, read by the TLS setup): readable, and not readable by
    /// everyone.
    Secret,
    /// A plain file: readable.
    File,
    /// A serial line: readable and writable.
    SerialLine,
    /// The state directory: writable, or creatable.
    StateDir,
}

/// One path the configuration names, with the key and where it is written.
struct Reference {
    key: String,
    path: PathBuf,
    kind: Kind,
    loc: Loc,
}

/// Checks every file, line and directory `cfg` names, as `who`. `sources` are the texts `cfg`
/// was loaded from, in order (for positions); `names` their file names.
pub fn check(
    cfg: &Config,
    names: &[String],
    texts: &[&str],
    who: &Identity,
    mode: Mode,
) -> FileReport {
    let mut report = FileReport::default();
    let root = merged_tree(texts);
    let mut refs = references(cfg, root.as_ref());
    // In file order, then position, as the configuration's own errors.
    refs.sort_by_key(|r| r.loc);
    for r in refs {
        check_one(&r, who, mode, &mut report, names);
    }
    report
}

/// Reads the files again and checks them (the entry point of `check-config` and `run`).
pub fn check_files(cfg: &Config, paths: &[PathBuf], who: &Identity, mode: Mode) -> FileReport {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let texts: Vec<String> = paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    check(cfg, &names, &texts, who, mode)
}

fn merged_tree(texts: &[&str]) -> Option<Table> {
    let mut merged: Option<Table> = None;
    for (i, text) in texts.iter().enumerate() {
        let t = tree::parse(i, text).ok()?;
        match &mut merged {
            None => merged = Some(t),
            Some(m) => tree::merge(m, t, true),
        }
    }
    merged
}

const START: Loc = Loc {
    src: 0,
    line: 1,
    col: 1,
};

/// Where `table.key` is written (`table` a top-level table), else the table, else the start.
fn loc_of(root: Option<&Table>, table: &str, key: &str) -> Loc {
    let Some(t) = root.and_then(|r| r.get(table)) else {
        return START;
    };
    match &t.node.val {
        Val::Table(t) => t.get(key).map_or(t.loc, |e| e.node.loc),
        _ => t.node.loc,
    }
}

/// Where `key` of the `[[array]]` entry named `name` is written.
fn loc_in_entry(root: Option<&Table>, array: &str, name: &str, key: &str) -> Loc {
    let Some(e) = root.and_then(|r| r.get(array)) else {
        return START;
    };
    let Val::Array(items) = &e.node.val else {
        return e.node.loc;
    };
    for item in items {
        if let Val::Table(t) = &item.val {
            let named = t
                .get("name")
                .is_some_and(|n| matches!(&n.node.val, Val::Str(s) if s == name));
            if named {
                return t.get(key).map_or(t.loc, |k| k.node.loc);
            }
        }
    }
    e.node.loc
}

fn references(cfg: &Config, root: Option<&Table>) -> Vec<Reference> {
    let mut out = Vec::new();
    let mut top = |key: &str, table: &str, path: &Option<PathBuf>, kind: Kind| {
        if let Some(path) = path {
            out.push(Reference {
                key: format!("{table}.{key}"),
                path: path.clone(),
                kind,
                loc: loc_of(root, table, key),
            });
        }
    };
    let u = &cfg.uplink;
    top("password_file", "uplink", &u.password_file, Kind::Password);
    top("ca_file", "uplink", &u.ca_file, Kind::File);
    top("cert_file", "uplink", &u.cert_file, Kind::File);
    top("key_file", "uplink", &u.key_file, Kind::Secret);
    top(
        "path",
        "storage",
        &Some(cfg.storage.path.clone()),
        Kind::StateDir,
    );
    for d in &cfg.modbus {
        if let Transport::Rtu(s) = &d.spec.transport {
            out.push(Reference {
                key: format!("modbus[{}].address", d.spec.name),
                path: s.path.clone(),
                kind: Kind::SerialLine,
                loc: loc_in_entry(root, "modbus", &d.spec.name, "address"),
            });
        }
    }
    for b in &cfg.dali {
        if let DaliInterface::AtxHat { port } = &b.interface {
            out.push(Reference {
                key: format!("dali[{}].port", b.name),
                path: port.clone(),
                kind: Kind::SerialLine,
                loc: loc_in_entry(root, "dali", &b.name, "port"),
            });
        }
    }
    for c in &cfg.cameras {
        out.push(Reference {
            key: format!("camera[{}].password_file", c.name),
            path: c.password_file.clone(),
            kind: Kind::Password,
            loc: loc_in_entry(root, "camera", &c.name, "password_file"),
        });
    }
    out
}

const R: u32 = 4;
const W: u32 = 2;
const X: u32 = 1;

/// Whether `who` has every bit of `want` (R/W/X) on a file with `meta`, by the mode bits.
fn permits(who: &Identity, meta: &Metadata, want: u32) -> bool {
    if who.is_root() {
        // Root reads and writes anything; it executes/searches when any x bit is set.
        return want & X == 0 || meta.mode() & 0o111 != 0 || meta.is_dir();
    }
    let mode = meta.mode();
    let bits = if meta.uid() == who.uid {
        (mode >> 6) & 7
    } else if who.groups.contains(&meta.gid()) {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    bits & want == want
}

/// `0640 root:cabinetd`.
fn describe_meta(meta: &Metadata) -> String {
    let user = User::from_uid(Uid::from_raw(meta.uid()))
        .ok()
        .flatten()
        .map_or_else(|| meta.uid().to_string(), |u| u.name);
    let group = Group::from_gid(Gid::from_raw(meta.gid()))
        .ok()
        .flatten()
        .map_or_else(|| meta.gid().to_string(), |g| g.name);
    format!("mode {:04o} {user}:{group}", meta.mode() & 0o7777)
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_owned())
    }
}

/// The first directory above `path` that `who` may not search, with its metadata.
fn blocked_ancestor(path: &Path, who: &Identity) -> Option<(PathBuf, String)> {
    let mut dir = PathBuf::new();
    let components: Vec<Component<'_>> = path.components().collect();
    for c in &components[..components.len().saturating_sub(1)] {
        dir.push(c);
        if let Ok(meta) = std::fs::metadata(&dir) {
            if meta.is_dir() && !permits(who, &meta, X) {
                return Some((dir.clone(), describe_meta(&meta)));
            }
        }
    }
    None
}

fn systemd_provides(path: &Path, kind: Kind) -> Option<&'static str> {
    if path.starts_with(CREDENTIALS_PREFIX) && std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
        return Some("systemd provides it when the unit starts (LoadCredential=)");
    }
    if kind == Kind::StateDir && path == Path::new(UNIT_STATE_DIRECTORY) {
        return Some("systemd creates it for the service user when the unit starts (StateDirectory=cabinetd)");
    }
    None
}

fn check_one(r: &Reference, who: &Identity, mode: Mode, report: &mut FileReport, names: &[String]) {
    let at = |message: String| ConfigError {
        file: names
            .get(r.loc.src)
            .cloned()
            .unwrap_or_else(|| "<config>".into()),
        line: r.loc.line,
        col: r.loc.col,
        message,
    };
    let shown = format!("{} {:?}", r.key, r.path.display().to_string());
    let user = who.describe();
    let path = absolute(&r.path);
    let serial = r.kind == Kind::SerialLine;
    // A serial line that is absent or closed at run time is a device down, retried: not fatal.
    let mut fault = |message: String| {
        let fatal = !(serial && mode == Mode::Run);
        let message = if fatal {
            message
        } else {
            format!("warning: {message}")
        };
        report.findings.push(Finding {
            fatal,
            at: at(message),
        });
    };
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if mode == Mode::Check {
                if let Some(why) = systemd_provides(&path, r.kind) {
                    report
                        .notes
                        .push(format!("{shown} does not exist here: not checked, {why}"));
                    return;
                }
            }
            if r.kind == Kind::StateDir {
                creatable(&path, who, &shown, &mut fault);
                return;
            }
            fault(format!("{shown} does not exist"));
            return;
        }
        Err(e) => {
            fault(format!("{shown}: cannot be examined: {e}"));
            return;
        }
    };
    if let Some((dir, how)) = blocked_ancestor(&path, who) {
        fault(format!(
            "{shown} is not reachable by {user}: it may not enter {} ({how})",
            dir.display()
        ));
        return;
    }
    let acl = "(POSIX ACLs are not read: if one grants access, ignore this)";
    match r.kind {
        Kind::Password | Kind::Secret | Kind::File => {
            if meta.is_dir() {
                fault(format!("{shown} is a directory, not a file"));
            } else if !permits(who, &meta, R) {
                fault(format!(
                    "{shown} is not readable by {user} ({}) {acl}",
                    describe_meta(&meta)
                ));
            } else if let Some(why) = (r.kind == Kind::Password)
                .then(|| read_secret(&path).err())
                .flatten()
                // Read as this process: when it is not the user checked for, only what the
                // file holds counts here (the mode bits above decided the access).
                .filter(|why| !why.starts_with("cannot read it"))
            {
                fault(format!("{shown} {why}"));
            } else if matches!(r.kind, Kind::Password | Kind::Secret) && meta.mode() & 0o004 != 0 {
                report.findings.push(Finding {
                    fatal: false,
                    at: at(format!(
                        "warning: {shown} is readable by every user ({}): a secret should be readable by cabinetd only (chmod 0640, group cabinetd; or 0600 owned by cabinetd)",
                        describe_meta(&meta)
                    )),
                });
            }
        }
        Kind::SerialLine => {
            let ft = meta.file_type();
            if !ft.is_char_device() {
                fault(format!(
                    "{shown} is not a serial device (not a character device)"
                ));
            } else if !permits(who, &meta, R | W) {
                fault(format!(
                    "{shown} is not readable and writable by {user} ({}): the service user must be in the device's group (dialout) {acl}",
                    describe_meta(&meta)
                ));
            }
        }
        Kind::StateDir => {
            if !meta.is_dir() {
                fault(format!("{shown} is not a directory"));
            } else if !permits(who, &meta, W | X) {
                fault(format!(
                    "{shown} is not writable by {user} ({}) {acl}",
                    describe_meta(&meta)
                ));
            } else if let Some((file, how)) = store_file_not_writable(&path, who) {
                fault(format!(
                    "{shown}: {} is not writable by {user} ({how}); was the daemon once run as another user? chown -R the directory to the service user",
                    file.display()
                ));
            }
        }
    }
}

/// A directory that does not exist yet: its nearest existing ancestor must let `who` create it.
fn creatable(path: &Path, who: &Identity, shown: &str, fault: &mut impl FnMut(String)) {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if let Ok(meta) = std::fs::metadata(d) {
            if !meta.is_dir() {
                fault(format!(
                    "{shown} does not exist and cannot be created: {} is not a directory",
                    d.display()
                ));
            } else if !permits(who, &meta, W | X) {
                fault(format!(
                    "{shown} does not exist and {} cannot create it: {} is not writable ({})",
                    who.describe(),
                    d.display(),
                    describe_meta(&meta)
                ));
            } else if let Some((blocked, how)) = blocked_ancestor(&d.join("x"), who) {
                fault(format!(
                    "{shown} does not exist and {} cannot create it: it may not enter {} ({how})",
                    who.describe(),
                    blocked.display()
                ));
            }
            return;
        }
        dir = d.parent();
    }
}

/// The first entry of the state directory, or of its `outbox` store, that `who` may not write
/// (sled opens its files read-write).
fn store_file_not_writable(dir: &Path, who: &Identity) -> Option<(PathBuf, String)> {
    const MAX_ENTRIES: usize = 4096;
    for d in [dir.to_owned(), dir.join("outbox")] {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.take(MAX_ENTRIES).flatten() {
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            let want = if meta.is_dir() { W | X } else { W };
            if !meta.file_type().is_symlink() && !permits(who, &meta, want) {
                return Some((e.path(), describe_meta(&meta)));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn nobody() -> Identity {
        Identity {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
            why: "test",
        }
    }

    fn meta_of(mode: u32) -> (tempfile::TempDir, Metadata) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        let m = std::fs::metadata(&f).unwrap();
        (dir, m)
    }

    #[test]
    fn secrets_read_as_one_line_and_bad_files_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\r\n").unwrap();
        assert_eq!(read_secret(&p).unwrap(), "s3cret");
        std::fs::write(&p, "two\nlines\n").unwrap();
        assert_eq!(
            read_secret(&p).unwrap(),
            "two\nlines",
            "only one break removed"
        );
        std::fs::write(&p, "\n").unwrap();
        assert_eq!(read_secret(&p).unwrap_err(), "is empty");
        std::fs::write(&p, vec![b'x'; 5000]).unwrap();
        assert!(read_secret(&p).unwrap_err().contains("larger than 4096"));
        assert!(read_secret(dir.path())
            .unwrap_err()
            .contains("not a regular file"));
        let e = read_secret(&dir.path().join("none")).unwrap_err();
        assert!(e.starts_with("cannot read it"), "{e}");
        std::fs::write(&p, b"\xff\xfe").unwrap();
        assert_eq!(read_secret(&p).unwrap_err(), "is not UTF-8 text");
    }

    #[test]
    fn supplementary_groups_come_from_the_status_groups_line() {
        let status = "Name:\tcabinetd\nGid:\t995\t995\t995\t995\nGroups:\t20 995 \nNgid:\t0\n";
        assert_eq!(parse_status_groups(status), vec![20, 995]);
        assert_eq!(parse_status_groups("Groups:\n"), Vec::<u32>::new());
        assert_eq!(parse_status_groups("Name:\tx\n"), Vec::<u32>::new());
    }

    #[test]
    fn mode_bits_decide_for_owner_group_and_others() {
        let (_d, m) = meta_of(0o640);
        let owner = Identity {
            uid: m.uid(),
            gid: 12345,
            groups: vec![12345],
            ..nobody()
        };
        let member = Identity {
            uid: 4242,
            gid: 1,
            groups: vec![1, m.gid()],
            ..nobody()
        };
        let stranger = Identity {
            uid: 4242,
            gid: 7,
            groups: vec![7],
            ..nobody()
        };
        // The owner may read and write, a group member read, anyone else nothing.
        assert!(permits(&owner, &m, R | W));
        assert!(permits(&member, &m, R));
        assert!(!permits(&member, &m, W));
        assert!(!permits(&stranger, &m, R));
        let root = Identity {
            uid: 0,
            gid: 0,
            groups: vec![0],
            ..nobody()
        };
        assert!(permits(&root, &m, R | W));
        assert!(!permits(&root, &m, X), "no x bit: not even root executes");
    }

    #[test]
    fn a_missing_state_dir_is_creatable_only_under_a_writable_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut faults = Vec::new();
        creatable(
            &dir.path().join("a/b"),
            &nobody(),
            "storage.path",
            &mut |m| faults.push(m),
        );
        assert_eq!(faults.len(), 1, "{faults:?}");
        assert!(faults[0].contains("cannot create it"), "{faults:?}");
        let mut faults = Vec::new();
        let me = Identity::current();
        creatable(&dir.path().join("a/b"), &me, "storage.path", &mut |m| {
            faults.push(m)
        });
        assert!(faults.is_empty(), "{faults:?}");
    }

    #[test]
    fn only_systemd_paths_are_left_to_systemd() {
        assert!(systemd_provides(Path::new(UNIT_STATE_DIRECTORY), Kind::StateDir).is_some());
        assert!(systemd_provides(Path::new(UNIT_STATE_DIRECTORY), Kind::File).is_none());
        assert!(systemd_provides(Path::new("/var/lib/other"), Kind::StateDir).is_none());
        if std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
            assert!(systemd_provides(
                Path::new("/run/credentials/cabinetd.service/cabinet.key"),
                Kind::Secret
            )
            .is_some());
        }
    }
}
