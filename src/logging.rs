//! Log setup: plain journald-friendly lines by default, JSON on request, `RUST_LOG`-style filter
//! from the config. Under systemd (`JOURNAL_STREAM` set) plain lines carry no timestamp or colour:
//! the journal adds its own.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Install the global subscriber. A bad filter falls back to `info` with a warning, since the
/// config validator already checked it and a logging problem must not stop the cabinet.
pub fn init(filter: &str, format: LogFormat) {
    let (env_filter, bad) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e.to_string())),
    };
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Plain if under_journal => builder.without_time().with_ansi(false).try_init(),
        LogFormat::Plain => builder.with_ansi(false).try_init(),
    };
    if installed.is_ok() {
        if let Some(e) = bad {
            tracing::warn!(filter, error = %e, "invalid log filter, using info");
        }
    }
}
