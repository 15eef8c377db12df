//! TLS for `mqtts://` brokers: rustls with the *ring* provider, trusting only the CA bundle named
//! by `uplink.ca_file` (system roots are never used, and rumqttc's default TLS setup, which panics
//! when native roots cannot load, is avoided — pitfall 12). The provider is passed to the
//! `ClientConfig` directly, so no process-wide default provider has to be installed.
//!
//! mTLS: with `uplink.cert_file` and `uplink.key_file` (PEM; systemd credentials work through the
//! same paths, e.g. `/run/credentials/cabinetd.service/cabinet.key`) the client presents its
//! certificate. The files are read at start and again by [`TlsSlot::reload`] (SIGHUP, and
//! periodically before the certificate expires): the new configuration is used from the next
//! connection on (rumqttc takes the transport at each CONNECT, pitfall 8); a running session
//! keeps its handshake. A reload that fails keeps the previous configuration.
//!
//! Handshake failures are turned into a sentence saying why ([`describe`]): unknown CA, expired,
//! name mismatch, or the broker refusing the client certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

use super::UplinkError;
use crate::config::UplinkConfig;

/// How often the daemon should call [`TlsSlot::reload`] besides SIGHUP, so a certificate renewed
/// on disk is picked up well before the old one expires.
pub const RELOAD_EVERY: Duration = Duration::from_secs(3600);

/// A client configuration and what the daemon exports about it.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// For rumqttc's `TlsConfiguration::Rustls`.
    pub config: Arc<ClientConfig>,
    /// notAfter of the client certificate (mTLS), for `cabinetd_tls_cert_expiry_seconds`.
    pub client_not_after: Option<SystemTime>,
}

/// A client configuration trusting exactly the certificates of a PEM bundle, presenting the
/// client certificate chain and key when given.
pub fn client_config(
    ca_pem: &[u8],
    client: Option<(&[u8], &[u8])>,
) -> Result<TlsMaterial, UplinkError> {
    let bad = |reason: String| UplinkError::TlsSetup { reason };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| bad(format!("CA bundle is not valid PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("CA certificate rejected: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("CA bundle holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots);
    let Some((cert_pem, key_pem)) = client else {
        return Ok(TlsMaterial {
            config: Arc::new(builder.with_no_client_auth()),
            client_not_after: None,
        });
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("client certificate is not valid PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(bad("client certificate file holds no certificate".into()));
    };
    let not_after =
        cert_not_after(leaf).map_err(|e| bad(format!("client certificate unreadable: {e}")))?;
    // The key's PEM parse error never includes key material.
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| bad(format!("client key is not a PEM private key: {e}")))?;
    let config = builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad(format!("client certificate and key unusable: {e}")))?;
    Ok(TlsMaterial {
        config: Arc::new(config),
        client_not_after: Some(not_after),
    })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, UplinkError> {
    std::fs::read(path).map_err(|e| UplinkError::TlsSetup {
        reason: format!("cannot read {what} {}: {e}", path.display()),
    })
}

/// The TLS files of `[uplink]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `uplink.ca_file`.
    pub ca_file: PathBuf,
    /// `uplink.cert_file` and `uplink.key_file` (config validation makes them go together).
    pub client: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    /// From `[uplink]`; `None` without `ca_file`.
    pub fn of(u: &UplinkConfig) -> Option<TlsFiles> {
        Some(TlsFiles {
            ca_file: u.ca_file.clone()?,
            client: u.cert_file.clone().zip(u.key_file.clone()),
        })
    }

    /// Read the files and build the configuration.
    pub fn load(&self) -> Result<TlsMaterial, UplinkError> {
        let ca = read(&self.ca_file, "CA bundle")?;
        let built = match &self.client {
            None => client_config(&ca, None),
            Some((cert, key)) => {
                let cert = read(cert, "client certificate")?;
                let key = read(key, "client key")?;
                client_config(&ca, Some((&cert, &key)))
            }
        };
        // Name the files: "holds no certificate" alone does not say which one to fix.
        built.map_err(|e| match e {
            UplinkError::TlsSetup { reason } => UplinkError::TlsSetup {
                reason: match &self.client {
                    None => format!("{reason} (ca_file {})", self.ca_file.display()),
                    Some((cert, key)) => format!(
                        "{reason} (ca_file {}, cert_file {}, key_file {})",
                        self.ca_file.display(),
                        cert.display(),
                        key.display()
                    ),
                },
            },
            other => other,
        })
    }
}

/// [`client_config`] from a CA file alone (server authentication only).
pub fn load_client_config(ca_file: &Path) -> Result<Arc<ClientConfig>, UplinkError> {
    TlsFiles {
        ca_file: ca_file.to_owned(),
        client: None,
    }
    .load()
    .map(|m| m.config)
}

/// The TLS configuration in use, replaceable while the uplink runs.
pub struct TlsSlot {
    files: TlsFiles,
    current: Mutex<Option<TlsMaterial>>,
    expiry: prometheus::Gauge,
    /// Bumped by every successful load: wakes a poll task waiting for usable TLS.
    loads: tokio::sync::watch::Sender<u64>,
}

impl TlsSlot {
    /// Load the files once; on failure the slot is empty (mqtts brokers are unusable) and the
    /// error is returned for the log and `/status`. `expiry` is
    /// `cabinetd_tls_cert_expiry_seconds`, set to the client certificate's notAfter.
    pub fn new(files: TlsFiles, expiry: prometheus::Gauge) -> (Arc<TlsSlot>, Option<UplinkError>) {
        let slot = Arc::new(TlsSlot {
            files,
            current: Mutex::new(None),
            expiry,
            loads: tokio::sync::watch::channel(0).0,
        });
        let err = slot.reload().err();
        (slot, err)
    }

    /// The configuration for the next connection.
    pub fn current(&self) -> Option<Arc<ClientConfig>> {
        self.lock().as_ref().map(|m| m.config.clone())
    }

    /// notAfter of the client certificate in use.
    pub fn client_not_after(&self) -> Option<SystemTime> {
        self.lock().as_ref().and_then(|m| m.client_not_after)
    }

    /// Read the files again; on success the next connection uses them. On failure the previous
    /// configuration stays (a half-written renewal must not take the cabinet offline).
    pub fn reload(&self) -> Result<Option<SystemTime>, UplinkError> {
        let material = self.files.load()?;
        let not_after = material.client_not_after;
        if let Some(t) = not_after {
            self.expiry.set(unix_seconds(t));
            let left = t.duration_since(SystemTime::now()).unwrap_or_default();
            if left.is_zero() {
                tracing::error!(not_after = %crate::record::format_ts(t), "uplink: the client certificate has expired; the broker will refuse the handshake");
            } else if left < Duration::from_secs(14 * 24 * 3600) {
                tracing::warn!(not_after = %crate::record::format_ts(t), days_left = left.as_secs() / 86_400, "uplink: the client certificate expires soon");
            }
        }
        *self.lock() = Some(material);
        self.loads.send_modify(|n| *n += 1);
        Ok(not_after)
    }

    /// Changes with every successful load.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.loads.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<TlsMaterial>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// A DER TLV: (tag, content, rest).
fn tlv(der: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let (&tag, rest) = der.split_first().ok_or("truncated DER")?;
    let (&len0, rest) = rest.split_first().ok_or("truncated DER")?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err("bad DER length".into());
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, b| (a << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err("truncated DER".into());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// notAfter of an X.509 certificate (RFC 5280 §4.1.2.5: UTCTime or GeneralizedTime, UTC).
///
/// A walk of the few DER elements before it rather than a full X.509 parser: rustls already
/// validates the certificates; this only reads one field for the expiry metric.
pub fn cert_not_after(der: &[u8]) -> Result<SystemTime, String> {
    let (tag, cert, _) = tlv(der)?;
    if tag != 0x30 {
        return Err("not a certificate".into());
    }
    let (tag, tbs, _) = tlv(cert)?;
    if tag != 0x30 {
        return Err("not a certificate".into());
    }
    let mut rest = tbs;
    let (tag, _, r) = tlv(rest)?;
    if tag == 0xa0 {
        rest = r; // [0] EXPLICIT version
    }
    // serialNumber, signature, issuer
    for expected in [0x02, 0x30, 0x30] {
        let (tag, _, r) = tlv(rest)?;
        if tag != expected {
            return Err("unexpected certificate layout".into());
        }
        rest = r;
    }
    let (tag, validity, _) = tlv(rest)?;
    if tag != 0x30 {
        return Err("unexpected certificate layout".into());
    }
    let (_, _, after) = tlv(validity)?;
    let (tag, time, _) = tlv(after)?;
    let text = std::str::from_utf8(time).map_err(|_| "bad time")?;
    let full = match (tag, text.len()) {
        // UTCTime YYMMDDHHMMSSZ: YY < 50 is 20YY (RFC 5280).
        (0x17, 13) => {
            let yy: u32 = text[..2].parse().map_err(|_| "bad UTCTime")?;
            format!("{}{text}", if yy < 50 { "20" } else { "19" })
        }
        (0x18, 15) => text.to_owned(),
        _ => return Err("unsupported notAfter encoding".into()),
    };
    if !full.ends_with('Z') || !full[..14].bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad notAfter {text:?}"));
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &full[0..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    );
    humantime::parse_rfc3339(&rfc3339).map_err(|e| format!("bad notAfter {text:?}: {e}"))
}

/// The rustls error somewhere in an error's chain (rumqttc wraps it in its own errors and in
/// `io::Error`s, whose `source()` skips the wrapped error itself).
fn find_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                return Some(r);
            }
        }
        cur = err.source();
    }
    None
}

/// Why a TLS handshake failed, for a person (`/status` `uplink.last_error`, the log).
pub fn describe_tls(e: &rustls::Error, host: &str) -> String {
    use CertificateError as C;
    let why = match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "the broker's certificate is not signed by a CA of uplink.ca_file (unknown CA)".to_owned(),
            C::Expired | C::ExpiredContext { .. } => "the broker's certificate has expired".to_owned(),
            C::NotValidYet | C::NotValidYetContext { .. } => "the broker's certificate is not valid yet (check the cabinet's clock)".to_owned(),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!("the broker's certificate is not valid for {host:?} (name mismatch)"),
            C::Revoked => "the broker's certificate is revoked".to_owned(),
            other => format!("the broker's certificate is invalid: {other:?}"),
        },
        rustls::Error::AlertReceived(a) => match a {
            AlertDescription::CertificateExpired => "the broker refused the client certificate: expired (uplink.cert_file)".to_owned(),
            AlertDescription::UnknownCA => "the broker refused the client certificate: signed by a CA it does not trust (unknown CA)".to_owned(),
            AlertDescription::CertificateRevoked => "the broker refused the client certificate: revoked".to_owned(),
            AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRequired
            | AlertDescription::AccessDenied => format!("the broker refused the client certificate ({a:?}): bad or missing client certificate (uplink.cert_file)"),
            other => format!("the broker ended the handshake ({other:?})"),
        },
        other => other.to_string(),
    };
    format!("TLS handshake with {host} failed: {why}")
}

/// A connection error as a sentence: TLS failures say why; others as rumqttc words them (hosts
/// and codes, never credentials).
pub fn describe(e: &rumqttc::ConnectionError, host: &str) -> String {
    match find_rustls(e) {
        Some(tls) => describe_tls(tls, host),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(not_after: (i32, u8, u8)) -> rcgen::CertifiedKey<rcgen::KeyPair> {
        let mut p = rcgen::CertificateParams::new(vec!["cabinet".into()]).unwrap();
        p.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        rcgen::CertifiedKey {
            cert,
            signing_key: key,
        }
    }

    #[test]
    fn refuses_bundles_without_certificates() {
        assert!(matches!(
            client_config(b"not a pem", None),
            Err(UplinkError::TlsSetup { .. })
        ));
        let err = load_client_config(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn reads_not_after_in_both_time_encodings() {
        // UTCTime up to 2049, GeneralizedTime from 2050 (RFC 5280).
        for (y, m, d) in [(2031, 3, 4), (1999, 12, 31), (2050, 1, 2), (2120, 6, 30)] {
            let c = cert((y, m, d));
            let t = cert_not_after(c.cert.der()).unwrap();
            let want =
                humantime::parse_rfc3339(&format!("{y:04}-{m:02}-{d:02}T00:00:00Z")).unwrap();
            assert_eq!(t, want, "{y}-{m}-{d}");
        }
        assert!(cert_not_after(b"\x30\x03\x02\x01\x00").is_err());
        assert!(cert_not_after(b"").is_err());
    }

    #[test]
    fn mtls_material_reports_the_client_certificate_expiry() {
        let ca = cert((2040, 1, 1));
        let client = cert((2035, 5, 6));
        let m = client_config(
            ca.cert.pem().as_bytes(),
            Some((
                client.cert.pem().as_bytes(),
                client.signing_key.serialize_pem().as_bytes(),
            )),
        )
        .unwrap();
        assert_eq!(
            m.client_not_after,
            Some(humantime::parse_rfc3339("2035-05-06T00:00:00Z").unwrap())
        );
        // A key file that is not a key: an error that shows no key material.
        let e = client_config(
            ca.cert.pem().as_bytes(),
            Some((client.cert.pem().as_bytes(), b"-----BEGIN NOTHING-----\n")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("client key"), "{e}");
    }

    #[test]
    fn a_failed_reload_keeps_the_previous_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let ca = cert((2040, 1, 1));
        let client = cert((2035, 5, 6));
        let files = TlsFiles {
            ca_file: dir.path().join("ca.pem"),
            client: Some((dir.path().join("c.pem"), dir.path().join("c.key"))),
        };
        std::fs::write(&files.ca_file, ca.cert.pem()).unwrap();
        std::fs::write(&files.client.as_ref().unwrap().0, client.cert.pem()).unwrap();
        std::fs::write(
            &files.client.as_ref().unwrap().1,
            client.signing_key.serialize_pem(),
        )
        .unwrap();
        let gauge = prometheus::Gauge::new("t", "t").unwrap();
        let (slot, err) = TlsSlot::new(files.clone(), gauge.clone());
        assert!(err.is_none(), "{err:?}");
        assert!(slot.current().is_some());
        assert_eq!(gauge.get(), 2_062_022_400.0, "2035-05-06 in unix seconds");
        let renewed = cert((2036, 1, 1));
        std::fs::write(&files.client.as_ref().unwrap().0, renewed.cert.pem()).unwrap();
        std::fs::write(
            &files.client.as_ref().unwrap().1,
            renewed.signing_key.serialize_pem(),
        )
        .unwrap();
        assert!(slot.reload().unwrap().is_some());
        assert_eq!(gauge.get(), 2_082_758_400.0);
        std::fs::write(&files.client.as_ref().unwrap().1, "half-written").unwrap();
        assert!(slot.reload().is_err());
        assert!(slot.current().is_some());
        assert_eq!(
            slot.client_not_after(),
            Some(humantime::parse_rfc3339("2036-01-01T00:00:00Z").unwrap())
        );
    }

    #[test]
    fn handshake_failures_say_why() {
        let h = "broker.example";
        let s = |e: rustls::Error| describe_tls(&e, h);
        assert!(s(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
        ))
        .contains("unknown CA"));
        assert!(
            s(rustls::Error::InvalidCertificate(CertificateError::Expired)).contains("expired")
        );
        assert!(s(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName
        ))
        .contains("name mismatch"));
        assert!(s(rustls::Error::AlertReceived(
            AlertDescription::CertificateExpired
        ))
        .contains("client certificate: expired"));
        assert!(s(rustls::Error::AlertReceived(AlertDescription::UnknownCA)).contains("unknown CA"));
        assert!(s(rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
        ))
        .contains("bad or missing client certificate"));
        // Wrapped as rumqttc does: ConnectionError → tls::Error → io::Error → rustls::Error.
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let e = rumqttc::ConnectionError::Tls(rumqttc::TlsError::Io(io));
        assert!(
            describe(&e, h).contains("unknown CA"),
            "{}",
            describe(&e, h)
        );
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateExpired),
        );
        let e = rumqttc::ConnectionError::Io(io);
        assert!(describe(&e, h).contains("expired"));
        let e = rumqttc::ConnectionError::NetworkTimeout;
        assert_eq!(describe(&e, h), "Network timeout");
    }
}
