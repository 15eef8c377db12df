//! WS-Security UsernameToken with PasswordDigest (pure).
//!
//! `Digest = Base64(SHA1(nonce ‖ Created ‖ password))`. Invariants: a fresh random nonce per
//! request (some cameras reject replays); `Created` is UTC in the camera's clock (local time plus
//! the measured offset) written `YYYY-MM-DDThh:mm:ssZ` with a literal `Z`; PasswordText is never
//! sent. The password lives in [`Credentials`], whose `Debug` never shows it.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha1::{Digest as _, Sha1};

use crate::soap::{escape, ns};
use crate::time::UtcDateTime;

/// A camera account. The caller reads the password (from `password_file`); this crate never
/// reads files or the environment.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    password: String,
}

impl Credentials {
    /// Credentials for `username` with `password`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    pub(crate) fn password(&self) -> &str {
        &self.password
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// `Base64(SHA1(nonce ‖ created ‖ password))`.
pub fn password_digest(nonce: &[u8], created: &str, password: &str) -> String {
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(created.as_bytes());
    h.update(password.as_bytes());
    B64.encode(h.finalize())
}

/// 16 random bytes from the OS.
pub fn fresh_nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    // The OS RNG failing is not something a camera poll can recover from; fall back to a
    // time-and-counter nonce that is still unique (the digest stays correct either way).
    if getrandom::fill(&mut n).is_err() {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let c = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        n[..8].copy_from_slice(&t.to_le_bytes());
        n[8..].copy_from_slice(&c.to_le_bytes());
    }
    n
}

/// The `wsse:Security` header for one request, `created` being the camera's "now".
pub fn security_header(creds: &Credentials, created: UtcDateTime, nonce: &[u8]) -> String {
    let created = created.to_xsd();
    let digest = password_digest(nonce, &created, creds.password());
    format!(
        concat!(
            r#"<wsse:Security xmlns:wsse="{wsse}" xmlns:wsu="{wsu}" s:mustUnderstand="1">"#,
            "<wsse:UsernameToken><wsse:Username>{user}</wsse:Username>",
            r#"<wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest">{digest}</wsse:Password>"#,
            r#"<wsse:Nonce EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary">{nonce}</wsse:Nonce>"#,
            "<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"
        ),
        wsse = ns::WSSE,
        wsu = ns::WSU,
        user = escape(&creds.username),
        digest = digest,
        nonce = B64.encode(nonce),
        created = created,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ONVIF Application Programmer's Guide §6.1.1.3 known-answer vector.
    #[test]
    fn password_digest_known_answer() {
        let nonce = B64.decode("LKqI6G/AikKCQrN0zqZFlg==").unwrap();
        assert_eq!(
            password_digest(&nonce, "2010-09-16T07:50:45Z", "userpassword"),
            "tuOSpGlFlIXsozq4HFNeeGeFLEI="
        );
    }

    #[test]
    fn header_uses_utc_z_and_fresh_nonces() {
        let c = Credentials::new("op<1>", "pw");
        let t = UtcDateTime::parse_xsd("2026-11-26T09:05:00Z").unwrap();
        let (n1, n2) = (fresh_nonce(), fresh_nonce());
        assert_ne!(n1, n2);
        let h = security_header(&c, t, &n1);
        assert!(h.contains("<wsu:Created>2026-11-26T09:05:00Z</wsu:Created>"));
        assert!(h.contains("<wsse:Username>op&lt;1&gt;</wsse:Username>"));
        assert!(h.contains(&password_digest(&n1, "2026-11-26T09:05:00Z", "pw")));
        assert!(!h.contains("PasswordText") && !h.contains(">pw<"));
        assert!(!format!("{c:?}").contains("pw\""));
    }
}
