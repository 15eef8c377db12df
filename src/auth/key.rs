//! Ed25519 keys of the ops tool (`cabinetd key generate`, `cabinetd sign`) and the public-key
//! text of `[[security.trusted_key]]`.
//!
//! Private key file format: PKCS#8 in PEM (`-----BEGIN PRIVATE KEY-----`, RFC 5208/5958, the
//! Ed25519 OID of RFC 8410), as written by `openssl genpkey -algorithm ed25519` — so a key made
//! elsewhere (OpenSSL, a JOSE library, an HSM export) can be used, and ours can be read by them.
//! Files are created with mode 0600 and never overwritten.

use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;

/// PKCS#8 v1 of an Ed25519 key up to its 32-byte seed (RFC 8410 §7): SEQUENCE { INTEGER 0,
/// AlgorithmIdentifier { 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }. Bytes 5.. are also
/// those of ring's v2 documents (after their own length and version).
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// Where the seed starts in both forms.
const V2_SEED_AT: usize = 16;

/// Errors of key handling.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not an Ed25519 PKCS#8 PEM key.
    #[error("{0}")]
    Invalid(String),
    /// The system's random generator failed.
    #[error("no randomness available for key generation")]
    Random,
}

/// An Ed25519 private key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private half.
        write!(f, "SigningKey(public {})", self.public_key_b64())
    }
}

impl SigningKey {
    /// A new key from the system's random generator, kept as PKCS#8 v1 (RFC 8410).
    ///
    /// ring generates PKCS#8 v2 with the public key in an encoding that OpenSSL and Python's
    /// `cryptography` refuse ("extra data"); the v1 form (the 32-byte seed only) is what they
    /// write and read, and ring reads it too.
    pub fn generate() -> Result<SigningKey, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Random)?;
        let v2 = doc.as_ref();
        if v2.len() < V2_SEED_AT + 32 || v2[5..V2_SEED_AT] != PKCS8_V1_PREFIX[5..] {
            return Err(KeyError::Invalid(
                "unexpected PKCS#8 layout from the key generator".into(),
            ));
        }
        let mut v1 = PKCS8_V1_PREFIX.to_vec();
        v1.extend_from_slice(&v2[V2_SEED_AT..V2_SEED_AT + 32]);
        Self::from_pkcs8(&v1)
    }

    /// From PKCS#8 DER (v1, as OpenSSL writes, or v2 with the public key).
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| KeyError::Invalid(format!("not an Ed25519 PKCS#8 private key: {e}")))?;
        Ok(SigningKey {
            pair,
            pkcs8: der.to_vec(),
        })
    }

    /// From the PEM text of a key file (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, KeyError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|e| {
            KeyError::Invalid(format!(
                "expected a PKCS#8 PEM key (-----BEGIN PRIVATE KEY-----): {e}"
            ))
        })?;
        Self::from_pkcs8(der.secret_pkcs8_der())
    }

    /// Read a key file.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pem(&pem).map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display())))
    }

    /// The PEM text of the private key.
    pub fn to_pem(&self) -> String {
        let body = STANDARD.encode(&self.pkcs8);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        pem
    }

    /// Write the private key to a new file, mode 0600 from creation (never world-readable, not
    /// even for an instant); refuses to overwrite.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(self.to_pem().as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.pair
            .public_key()
            .as_ref()
            .try_into()
            .expect("Ed25519 public keys are 32 bytes")
    }

    /// The public key as base64url without padding (a JWK's `x`, the config's `public_key`).
    pub fn public_key_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.public_key())
    }

    /// The Ed25519 signature of `msg`.
    pub fn sign_bytes(&self, msg: &[u8]) -> [u8; 64] {
        self.pair
            .sign(msg)
            .as_ref()
            .try_into()
            .expect("Ed25519 signatures are 64 bytes")
    }

    /// A JWS compact serialization of `payload` with header `{"alg":"EdDSA","kid":KID}`.
    pub fn sign_compact(&self, kid: &str, payload: &[u8]) -> String {
        let header = serde_json::json!({"alg": "EdDSA", "kid": kid}).to_string();
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let sig = self.sign_bytes(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig));
        token
    }
}

/// Decode a `public_key` of the config: base64url without padding, 32 bytes.
pub fn decode_public_key(s: &str) -> Result<[u8; 32], String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| format!("not base64url without padding ({e})"))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("an Ed25519 public key is 32 bytes, found {}", bytes.len()))
}

/// The `[[security.trusted_key]]` text for a public key (printed by `cabinetd key generate`).
pub fn trusted_key_toml(kid: &str, public_key_b64: &str) -> String {
    format!(
        "[[security.trusted_key]]\nkid = \"{kid}\"\npublic_key = \"{public_key_b64}\"\nactions = [\"*\"]             # narrow it: e.g. [\"light.*\", \"scene.*\"]\ndesired_config = false       # true only for the key that signs P/C/config/desired\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_and_signs_verifiably() {
        let k = SigningKey::generate().unwrap();
        let pem = k.to_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let k2 = SigningKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(k.public_key(), k2.public_key());
        let token = k2.sign_compact("ops-1", b"{}");
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, k.public_key())
            .verify(signed.as_bytes(), &sig)
            .unwrap();
        assert!(!format!("{k:?}").contains(&pem[30..60]));
    }

    #[test]
    fn openssl_reads_our_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let k = SigningKey::generate().unwrap();
        k.write_new(&path).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&path)
            .output()
            .expect("openssl CLI");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout[out.stdout.len() - 32..], k.public_key());
    }

    #[test]
    fn reads_an_openssl_style_v1_key() {
        // RFC 8410 §10.3 example private key (PKCS#8 v1, as `openssl genpkey` writes).
        let pem = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        let k = SigningKey::from_pem(pem).unwrap();
        // Its public key, RFC 8410 §10.1: 19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1
        assert_eq!(
            k.public_key()[..4],
            [0x19, 0xbf, 0x44, 0x09],
            "{:02x?}",
            k.public_key()
        );
    }

    #[test]
    fn public_keys_must_be_32_bytes_of_base64url() {
        assert!(decode_public_key("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").is_ok());
        assert!(
            decode_public_key("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
                .unwrap_err()
                .contains("base64url")
        );
        assert!(decode_public_key("11qYAYKxCrfVS+7TyWQHOg7hcvPapiMlrwIaaPcHURo").is_err());
        assert!(decode_public_key("AAAA").unwrap_err().contains("32 bytes"));
    }

    #[test]
    fn new_key_files_are_0600_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let k = SigningKey::generate().unwrap();
        k.write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(k.write_new(&path), Err(KeyError::Io { .. })));
        assert_eq!(
            SigningKey::load(&path).unwrap().public_key(),
            k.public_key()
        );
    }
}
