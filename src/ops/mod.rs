//! The ops tool in the daemon's binary (SPEC §1, issue 12): `cabinetd key generate`,
//! `cabinetd sign`, `cabinetd ctl … send|fleet`. How ops drive cabinets without a central post.
//!
//! Exit codes: 0 success (for `ctl send`: the command `succeeded`), 1 any failure (bad input, key
//! unreadable, broker unreachable, command not succeeded or no result in time), 2 usage (clap).
//! Keys are PKCS#8 PEM files (see [`crate::auth::key`]); nothing secret is ever printed.

pub mod ctl;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::auth::key::{trusted_key_toml, SigningKey};
use crate::record::format_ts;

pub use ctl::{CtlArgs, CtlCommand};

/// `cabinetd key …`.
#[derive(clap::Subcommand, Debug)]
pub enum KeyCommand {
    /// Write a new Ed25519 private key (PKCS#8 PEM, mode 0600) and print the
    /// `[[security.trusted_key]]` text of its public key.
    #[command(
        after_help = "Example:\n  cabinetd key generate --out /etc/cabinetd-ops/ops-2026.pem\n  \
        (append the printed text to the cabinets' config, narrowing `actions`)\n\n\
        Exit codes: 0 written, 1 error (the file exists: keys are never overwritten)."
    )]
    Generate {
        /// The private key file to create (refused if it exists).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Key id for the printed config text (default: the file name without extension).
        #[arg(long, value_name = "KID")]
        kid: Option<String>,
    },
}

/// `cabinetd sign`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Reads a command ({\"id\",\"action\",\"args\",…}) or a desired config \
    ({\"version\",\"config\",…}) as JSON on stdin and prints the JWS (docs/protocol.md, \"Signed messages\") \
    on stdout. `issued_at` is set to now when absent; `cabinet` comes from --cabinet when absent; \
    `expires_at` must be given or come from --expires.\n\n\
    Example:\n  echo '{\"id\":\"c-42\",\"action\":\"light.set\",\"args\":{\"target\":\"all\",\"level_percent\":100}}' \\\n    \
    | cabinetd sign --key ops.pem --kid ops-2026 --cabinet dijon-017 --expires 10min \\\n    \
    | mosquitto_pub -t cabinets/v1/dijon-017/cmd -q 1 -s\n\n\
    Exit codes: 0 printed, 1 bad input or key."
)]
pub struct SignArgs {
    /// Private key file (PKCS#8 PEM, from `cabinetd key generate` or OpenSSL).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Key id: the `kid` of the cabinets' `[[security.trusted_key]]`.
    #[arg(long, value_name = "KID")]
    pub kid: String,
    /// Cabinet id (or `all` for P/all/cmd), when the JSON has no `cabinet`.
    #[arg(long, value_name = "CABINET")]
    pub cabinet: Option<String>,
    /// Validity from issued_at, when the JSON has no `expires_at` (e.g. `10min`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub expires: Option<Duration>,
}

/// An ops-tool failure: printed as `cabinetd: …`, exit 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OpsError(pub String);

fn err(msg: impl Into<String>) -> OpsError {
    OpsError(msg.into())
}

/// Print an error and map the outcome to the exit code.
pub fn exit(what: &str, r: Result<(), OpsError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cabinetd {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `cabinetd key generate`.
pub fn key(cmd: &KeyCommand) -> ExitCode {
    let KeyCommand::Generate { out, kid } = cmd;
    exit(
        "key generate",
        key_generate(out, kid.as_deref(), &mut std::io::stdout()),
    )
}

fn default_kid(out: &Path) -> String {
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("ops");
    let kid: String = stem
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(crate::auth::MAX_KID_CHARS)
        .collect();
    if kid.is_empty() {
        "ops".into()
    } else {
        kid
    }
}

/// Generate, write (0600, never overwriting) and print the config text.
pub fn key_generate(out: &Path, kid: Option<&str>, stdout: &mut dyn Write) -> Result<(), OpsError> {
    let kid = kid.map_or_else(|| default_kid(out), str::to_owned);
    if !is_kid(&kid) {
        return Err(err(format!(
            "--kid {kid:?}: must be 1 to 64 characters of [A-Za-z0-9._-]"
        )));
    }
    let key = SigningKey::generate().map_err(|e| err(e.to_string()))?;
    key.write_new(out).map_err(|e| err(e.to_string()))?;
    eprintln!(
        "private key written to {} (mode 0600); keep it off the cabinets",
        out.display()
    );
    write!(stdout, "{}", trusted_key_toml(&kid, &key.public_key_b64()))
        .map_err(|e| err(e.to_string()))
}

fn is_kid(s: &str) -> bool {
    (1..=crate::auth::MAX_KID_CHARS).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `cabinetd sign`.
pub fn sign(args: &SignArgs) -> ExitCode {
    let run = || -> Result<(), OpsError> {
        let mut input = Vec::new();
        let limit = crate::auth::MAX_DESIRED_TOKEN_BYTES as u64;
        std::io::stdin()
            .take(limit + 1)
            .read_to_end(&mut input)
            .map_err(|e| err(format!("cannot read stdin: {e}")))?;
        if input.len() as u64 > limit {
            return Err(err(format!("input over {limit} bytes")));
        }
        let key = SigningKey::load(&args.key).map_err(|e| err(e.to_string()))?;
        let token = sign_document(
            &input,
            &key,
            &args.kid,
            args.cabinet.as_deref(),
            args.expires,
            SystemTime::now(),
        )?;
        println!("{token}");
        Ok(())
    };
    exit("sign", run())
}

/// Complete a command or desired-config document (`cabinet`, `issued_at`, `expires_at`) and sign
/// it. Refuses what a cabinet would refuse anyway, with the field named.
pub fn sign_document(
    input: &[u8],
    key: &SigningKey,
    kid: &str,
    cabinet: Option<&str>,
    expires: Option<Duration>,
    now: SystemTime,
) -> Result<String, OpsError> {
    if !is_kid(kid) {
        return Err(err(format!(
            "--kid {kid:?}: must be 1 to 64 characters of [A-Za-z0-9._-]"
        )));
    }
    let mut doc: Map<String, Value> = serde_json::from_slice(input)
        .map_err(|e| err(format!("stdin is not a JSON object: {e}")))?;
    let desired = doc.contains_key("config");
    let needed: &[&str] = if desired {
        &["version", "config"]
    } else {
        &["id", "action"]
    };
    for field in needed {
        if !doc.get(*field).is_some_and(Value::is_string) {
            return Err(err(format!(
                "field `{field}`: missing or not a string (a {} needs {})",
                if desired { "desired config" } else { "command" },
                needed.join(" and ")
            )));
        }
    }
    if !doc.contains_key("cabinet") {
        match cabinet {
            Some(c) => {
                doc.insert("cabinet".into(), c.into());
            }
            None => {
                return Err(err(
                    "field `cabinet`: missing; add it or pass --cabinet CABINET (or all)",
                ))
            }
        }
    }
    if desired && doc.get("cabinet").and_then(Value::as_str) == Some("all") {
        return Err(err(
            "field `cabinet`: a desired config names one cabinet, never \"all\"",
        ));
    }
    let issued_at = match doc.get("issued_at") {
        Some(Value::String(s)) => humantime::parse_rfc3339_weak(s)
            .map_err(|e| err(format!("field `issued_at`: not an RFC 3339 time ({e})")))?,
        Some(_) => return Err(err("field `issued_at`: must be an RFC 3339 string")),
        None => {
            doc.insert("issued_at".into(), format_ts(now).into());
            now
        }
    };
    match (doc.get("expires_at"), expires) {
        (Some(Value::String(s)), _) => {
            humantime::parse_rfc3339_weak(s)
                .map_err(|e| err(format!("field `expires_at`: not an RFC 3339 time ({e})")))?;
        }
        (Some(_), _) => return Err(err("field `expires_at`: must be an RFC 3339 string")),
        (None, Some(d)) => {
            doc.insert("expires_at".into(), format_ts(issued_at + d).into());
        }
        (None, None) => {
            return Err(err(
                "field `expires_at`: missing; add it or pass --expires DURATION (e.g. 10min)",
            ))
        }
    }
    let payload = serde_json::to_vec(&doc).expect("a JSON map serialises");
    Ok(key.sign_compact(kid, &payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{verify, ActionPattern, SecurityPolicy, TopicKind, TrustedKey, TrustedKeys};

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn signed_documents_verify_and_are_completed() {
        let key = SigningKey::generate().unwrap();
        let keys = TrustedKeys::new(vec![TrustedKey {
            kid: "ops".into(),
            public_key: key.public_key(),
            actions: vec![ActionPattern::Any],
            desired_config: true,
        }]);
        let now = at(1_795_680_000);
        let cmd = br#"{"id":"c-1","action":"light.set","args":{"target":"all","level_percent":5}}"#;
        let t = sign_document(
            cmd,
            &key,
            "ops",
            Some("cab-1"),
            Some(Duration::from_secs(60)),
            now,
        )
        .unwrap();
        let v = verify(
            t.as_bytes(),
            TopicKind::Cabinet,
            &keys,
            &SecurityPolicy::default(),
            "cab-1",
            now,
        )
        .unwrap();
        assert_eq!(v.issued_at, now);
        assert_eq!(v.expires_at, now + Duration::from_secs(60));
        assert_eq!(v.claims["args"]["level_percent"], 5);
        let d = br#"{"version":"v9","config":"[cabinet]\n","cabinet":"cab-1","expires_at":"2026-11-27T00:00:00Z"}"#;
        let t = sign_document(d, &key, "ops", None, None, now).unwrap();
        assert!(verify(
            t.as_bytes(),
            TopicKind::Desired,
            &keys,
            &SecurityPolicy::default(),
            "cab-1",
            now
        )
        .is_ok());
    }

    #[test]
    fn incomplete_documents_are_refused_naming_the_field() {
        let key = SigningKey::generate().unwrap();
        let now = at(1_795_680_000);
        let e = |input: &[u8], cab: Option<&str>, exp: Option<Duration>| {
            sign_document(input, &key, "ops", cab, exp, now)
                .unwrap_err()
                .to_string()
        };
        let min = Some(Duration::from_secs(60));
        assert!(e(b"[1]", Some("c"), min).contains("JSON object"));
        assert!(e(br#"{"action":"x"}"#, Some("c"), min).contains("field `id`"));
        assert!(e(br#"{"id":"a","action":"x"}"#, None, min).contains("field `cabinet`"));
        assert!(e(br#"{"id":"a","action":"x"}"#, Some("c"), None).contains("field `expires_at`"));
        assert!(e(br#"{"version":"1","config":""}"#, Some("all"), min).contains("never \"all\""));
        assert!(sign_document(
            br#"{"id":"a","action":"x"}"#,
            &key,
            "bad kid",
            Some("c"),
            min,
            now
        )
        .is_err());
    }

    #[test]
    fn key_generate_prints_the_trusted_key_text() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ops-2026.pem");
        let mut text = Vec::new();
        key_generate(&out, None, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        let key = SigningKey::load(&out).unwrap();
        assert!(
            text.starts_with("[[security.trusted_key]]\nkid = \"ops-2026\"\n"),
            "{text}"
        );
        assert!(text.contains(&key.public_key_b64()));
        assert!(!text.contains("PRIVATE"));
        assert!(
            key_generate(&out, None, &mut Vec::new()).is_err(),
            "never overwritten"
        );
    }
}
