//! TLS for `mqtts://` brokers: rustls with the *ring* provider, trusting only the CA bundle named
//! by `uplink.ca_file` (system roots are never used, and rumqttc's default TLS setup, which panics
//! when native roots cannot load, is avoided — pitfall 12). The provider is passed to the
//! `ClientConfig` directly, so no process-wide default provider has to be installed.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use super::UplinkError;

/// A client configuration trusting exactly the certificates of a PEM bundle.
pub fn client_config(ca_pem: &[u8]) -> Result<Arc<ClientConfig>, UplinkError> {
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
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// [`client_config`] from a file.
pub fn load_client_config(ca_file: &Path) -> Result<Arc<ClientConfig>, UplinkError> {
    let pem = std::fs::read(ca_file).map_err(|e| UplinkError::TlsSetup {
        reason: format!("cannot read CA bundle {}: {e}", ca_file.display()),
    })?;
    client_config(&pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bundles_without_certificates() {
        assert!(matches!(
            client_config(b"not a pem"),
            Err(UplinkError::TlsSetup { .. })
        ));
        let err = load_client_config(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
