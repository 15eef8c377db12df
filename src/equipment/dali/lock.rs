//! One owner per DALI line: an advisory `flock` on `<storage.path>/dali-<bus>.lock`.
//!
//! The daemon's bus task holds it for as long as it may talk to the line; `cabinetd dali
//! commission` takes it too and refuses to run while the daemon holds it (two masters
//! interleaving DTR writes or a random-address search would corrupt each other). The kernel
//! drops the lock when the holder dies, so a crashed daemon never leaves a stale lock.
//! The ATX HAT port is additionally opened exclusively (TIOCEXCL, the serial layer's default).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// A held bus lock; released on drop.
#[derive(Debug)]
pub struct BusLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl BusLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("DALI bus {bus} is in use by another process (lock {} is held)", path.display())]
    Busy {
        /// Bus name.
        bus: String,
        /// Lock file.
        path: PathBuf,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        /// Lock file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

/// The lock file of `bus` under the storage directory.
pub fn lock_path(storage: &Path, bus: &str) -> PathBuf {
    storage.join(format!("dali-{bus}.lock"))
}

/// Takes the lock of `bus` without waiting.
pub fn try_lock(storage: &Path, bus: &str) -> Result<BusLock, LockError> {
    let path = lock_path(storage, bus);
    let io_err = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(storage).map_err(io_err)?;
    // flock works on a read-only descriptor: a lock file created by root (the CLI run by an
    // operator) stays usable by the unprivileged daemon.
    let file = match OpenOptions::new().append(true).create(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            File::open(&path).map_err(io_err)?
        }
        Err(e) => return Err(io_err(e)),
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(BusLock { _lock: lock, path }),
        Err((_, Errno::EWOULDBLOCK)) => Err(LockError::Busy {
            bus: bus.to_owned(),
            path,
        }),
        Err((_, e)) => Err(io_err(io::Error::from(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let first = try_lock(dir.path(), "bus-a").unwrap();
        assert_eq!(first.path(), dir.path().join("dali-bus-a.lock"));
        let err = try_lock(dir.path(), "bus-a").unwrap_err();
        assert!(matches!(err, LockError::Busy { .. }), "{err}");
        assert!(err.to_string().contains("in use"), "{err}");
        // Other buses are independent.
        let _b = try_lock(dir.path(), "bus-b").unwrap();
        drop(first);
        try_lock(dir.path(), "bus-a").unwrap();
    }
}
