//! The wall clock the daemon's time-of-day logic reads (the rules core: programme, windows,
//! nights, clock safety; the energy accountant: which night is due), as a value that can be
//! replaced: the system clock in production; in tests, a clock that follows tokio's paused time
//! (a whole night in seconds) or one offset by a file the test rewrites (clock jumps through the
//! daemon binary). Record timestamps keep the system clock.
//!
//! The offset file is a *test hook*: `cabinetd run` uses it only when the environment variable
//! `CABINETD_TEST_CLOCK_OFFSET_FILE` names one, which main.rs alone reads (library code never
//! reads the environment), and then logs a warning at start. The file holds one number, the
//! offset in seconds added to the system clock (`-21600`, `21600`, `-1.8e9`); a missing or
//! unreadable file is offset 0.

use std::path::PathBuf;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

/// A source of wall-clock time.
#[derive(Clone)]
pub struct WallClock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WallClock({})", self.now())
    }
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock::system()
    }
}

impl WallClock {
    /// The system clock.
    pub fn system() -> WallClock {
        WallClock(Arc::new(Timestamp::now))
    }

    /// Any function of no argument.
    pub fn from_fn(f: impl Fn() -> Timestamp + Send + Sync + 'static) -> WallClock {
        WallClock(Arc::new(f))
    }

    /// Starts at `start` and advances with `tokio::time::Instant` (so with a paused test clock).
    pub fn tokio_from(start: Timestamp) -> WallClock {
        let origin = tokio::time::Instant::now();
        WallClock::from_fn(move || {
            let d = SignedDuration::try_from(origin.elapsed()).unwrap_or(SignedDuration::ZERO);
            start.saturating_add(d).unwrap_or(start)
        })
    }

    /// The system clock plus the offset (seconds) read from `file` at each reading — the test
    /// hook described in the module docs.
    pub fn offset_file(file: PathBuf) -> WallClock {
        WallClock::from_fn(move || {
            let offset = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
                .filter(|x| x.is_finite())
                .unwrap_or(0.0);
            let d = SignedDuration::try_from_secs_f64(offset).unwrap_or(SignedDuration::ZERO);
            let now = Timestamp::now();
            now.saturating_add(d).unwrap_or(now)
        })
    }

    /// The time now.
    pub fn now(&self) -> Timestamp {
        (self.0)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_follows_paused_time() {
        let start: Timestamp = "2026-12-21T16:00:00Z".parse().unwrap();
        let c = WallClock::tokio_from(start);
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        assert_eq!(
            c.now(),
            "2026-12-21T17:00:00Z".parse::<Timestamp>().unwrap()
        );
    }

    #[test]
    fn the_offset_file_moves_the_clock_and_is_zero_when_absent() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("offset");
        let c = WallClock::offset_file(f.clone());
        assert!((c.now() - Timestamp::now()).as_secs().abs() < 5);
        std::fs::write(&f, "-21600\n").unwrap();
        let d = (c.now() - Timestamp::now()).as_secs();
        assert!((d + 21600).abs() < 5, "{d}");
        std::fs::write(&f, "-1.8e9").unwrap();
        assert!(c.now() < "1970-01-02T00:00:00Z".parse::<Timestamp>().unwrap());
    }
}
