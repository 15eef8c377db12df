//! Signed commands and desired configurations (SPEC §3 "Signed messages"): pure verification of
//! JWS compact serialization (RFC 7515) with `alg` = `EdDSA` (RFC 8037, Ed25519) and nothing else.
//!
//! # Invariants
//! - [`verify`] is pure in (token, keys, policy, cabinet, now): no I/O, no clock, no allocation
//!   beyond a bounded copy of the input. The input is bounded ([`TopicKind::max_bytes`]) before
//!   anything else is looked at, and the header segment separately ([`MAX_HEADER_B64`]).
//! - The checks run in SPEC order and the first failure is the answer: size, shape (three
//!   base64url segments without padding), header (`alg` exactly `EdDSA`, no `crit`, no unknown
//!   or duplicate parameter), known `kid`, signature over the ASCII `header "." payload`, then the
//!   claims: `cabinet`, `issued_at` not beyond the clock skew in the future, `expires_at` present
//!   and after now, validity at most the maximum, the action within the key's scope (or, for a
//!   desired configuration, `desired_config = true`).
//! - A failure never carries the payload. It carries the `kid` when the header named one of a
//!   sane shape, and the command `id` when the payload decoded and the id is a string of at most
//!   [`MAX_ID_BYTES`] (longer ids are never echoed). [`Rejected::authentic`] tells whether the
//!   signature was valid: only then may a `rejected` result be published for that id (SPEC).
//! - [`AuthError::reason`] is one of the fixed [`REASONS`]: the label of
//!   `cabinetd_auth_rejected_total{reason}` and `data.reason` of the `auth_rejected` event.

pub mod key;

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Largest signed command (bytes of the whole JWS). A command is a few hundred bytes; this
/// leaves room for long arguments and still bounds the work an unauthenticated sender can cause.
pub const MAX_COMMAND_TOKEN_BYTES: usize = 64 * 1024;
/// Largest signed desired configuration (bytes of the whole JWS): the TOML of a big cabinet,
/// JSON-escaped, then base64url (×4/3). Messages are also bounded earlier by
/// `uplink.max_incoming_bytes` (default 1 MiB), which drops larger ones unread.
pub const MAX_DESIRED_TOKEN_BYTES: usize = 4 * 1024 * 1024;
/// Largest header segment (base64url characters). `{"alg":"EdDSA","kid":…}` needs < 150.
pub const MAX_HEADER_B64: usize = 1024;
/// Longest command id (bytes) that is ever stored or echoed (SPEC: ids are 1 to 128 bytes).
pub const MAX_ID_BYTES: usize = 128;
/// Longest `kid` (characters of `[A-Za-z0-9._-]`).
pub const MAX_KID_CHARS: usize = 64;
/// Default `security.max_clock_skew` (SPEC).
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// Default `security.max_validity` (SPEC).
pub const DEFAULT_MAX_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// Where a message arrived: what its `cabinet` claim may say and what its signer must be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// `P/C/cmd`: `cabinet` must be this cabinet's id.
    Cabinet,
    /// `P/all/cmd`: `cabinet` is `all` (or this cabinet's id).
    All,
    /// `P/C/config/desired`: `cabinet` must be this cabinet's id; the key needs `desired_config`.
    Desired,
}

impl TopicKind {
    /// The kind of a topic of this cabinet (`P/C/cmd`, `P/all/cmd`, `P/C/config/desired`).
    pub fn of_topic(topic: &str, prefix: &str, cabinet: &str) -> Option<TopicKind> {
        let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
        if rest == "all/cmd" {
            return Some(TopicKind::All);
        }
        match rest.strip_prefix(cabinet)?.strip_prefix('/')? {
            "cmd" => Some(TopicKind::Cabinet),
            "config/desired" => Some(TopicKind::Desired),
            _ => None,
        }
    }

    /// The largest token accepted on this kind of topic.
    pub fn max_bytes(self) -> usize {
        match self {
            TopicKind::Cabinet | TopicKind::All => MAX_COMMAND_TOKEN_BYTES,
            TopicKind::Desired => MAX_DESIRED_TOKEN_BYTES,
        }
    }
}

/// One entry of a trusted key's `actions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionPattern {
    /// `"*"`: every action.
    Any,
    /// `"light.*"`: every action of a family; holds the prefix with its dot (`"light."`).
    Family(String),
    /// `"point.write"`: exactly this action.
    Exact(String),
}

impl ActionPattern {
    /// Parse a pattern; `known` is the list of action names (a pattern must match one of them,
    /// so a typo is a config error rather than a key that silently may sign nothing).
    pub fn parse(s: &str, known: &[&str]) -> Result<ActionPattern, String> {
        if s == "*" {
            return Ok(ActionPattern::Any);
        }
        if let Some(family) = s.strip_suffix(".*") {
            let prefix = format!("{family}.");
            if !family.is_empty() && known.iter().any(|a| a.starts_with(&prefix)) {
                return Ok(ActionPattern::Family(prefix));
            }
            return Err(format!(
                "unknown action family {s:?} (known actions: {})",
                known.join(", ")
            ));
        }
        if known.contains(&s) {
            return Ok(ActionPattern::Exact(s.to_owned()));
        }
        Err(format!(
            "unknown action {s:?} (known: {}; \"FAMILY.*\" or \"*\" for several)",
            known.join(", ")
        ))
    }

    /// Whether this pattern allows `action`.
    pub fn matches(&self, action: &str) -> bool {
        match self {
            ActionPattern::Any => true,
            ActionPattern::Family(prefix) => action.starts_with(prefix.as_str()),
            ActionPattern::Exact(name) => name == action,
        }
    }
}

impl fmt::Display for ActionPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionPattern::Any => f.write_str("*"),
            ActionPattern::Family(prefix) => write!(f, "{prefix}*"),
            ActionPattern::Exact(name) => f.write_str(name),
        }
    }
}

/// A `[[security.trusted_key]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// Key id, as in the JWS header.
    pub kid: String,
    /// Ed25519 public key.
    pub public_key: [u8; 32],
    /// What it may sign.
    pub actions: Vec<ActionPattern>,
    /// Whether it may sign `P/C/config/desired`.
    pub desired_config: bool,
}

impl TrustedKey {
    /// Whether this key may sign `action`.
    pub fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|p| p.matches(action))
    }
}

/// The trusted keys (several for rotation), looked up by `kid`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustedKeys(Vec<TrustedKey>);

impl TrustedKeys {
    /// The keys; `kid`s are unique (config validation guarantees it; the first wins otherwise).
    pub fn new(keys: Vec<TrustedKey>) -> Self {
        TrustedKeys(keys)
    }

    /// The key named `kid`.
    pub fn get(&self, kid: &str) -> Option<&TrustedKey> {
        self.0.iter().find(|k| k.kid == kid)
    }

    /// All keys, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &TrustedKey> {
        self.0.iter()
    }

    /// No key at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The time rules of `[security]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecurityPolicy {
    /// How far in the future `issued_at` may be (the cabinet's clock may lag).
    pub max_clock_skew: Duration,
    /// Longest `expires_at - issued_at`.
    pub max_validity: Duration,
}

impl Default for SecurityPolicy {
    fn default() -> Self {
        SecurityPolicy {
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            max_validity: DEFAULT_MAX_VALIDITY,
        }
    }
}

/// The validated `[security]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    /// Only signed commands and desired configs are accepted (default true).
    pub require_signed: bool,
    /// Time rules.
    pub policy: SecurityPolicy,
    /// `[[security.trusted_key]]`.
    pub keys: TrustedKeys,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            require_signed: true,
            policy: SecurityPolicy::default(),
            keys: TrustedKeys::default(),
        }
    }
}

/// Why a message was refused: one variant per SPEC check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Over the size bound of its topic.
    #[error("message of {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Bytes received.
        size: usize,
        /// The bound.
        limit: usize,
    },
    /// Plain JSON where a signature is required.
    #[error("unsigned message (security.require_signed is on)")]
    Unsigned,
    /// Not a JWS compact serialization, or a segment that does not decode.
    #[error("malformed JWS: {0}")]
    Malformed(String),
    /// `alg` other than `EdDSA` (including `none`, HS*, RS*), or missing.
    #[error("algorithm {0:?} refused: only EdDSA is accepted")]
    Algorithm(String),
    /// `crit`, an unknown or a duplicate header parameter.
    #[error("header refused: {0}")]
    Header(String),
    /// No `kid`, or one that names no trusted key.
    #[error("unknown key id {0:?}")]
    UnknownKid(String),
    /// The signature does not verify with the named key.
    #[error("signature does not verify with key {0:?}")]
    Signature(String),
    /// A claim is missing or of the wrong form.
    #[error("claim `{claim}`: {problem}")]
    Claim {
        /// `cabinet`, `issued_at`, `expires_at`, `action`, …
        claim: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// Signed for another cabinet, or `all` on the cabinet's own topic.
    #[error("signed for cabinet {found:?}; {expected}")]
    Cabinet {
        /// The `cabinet` claim.
        found: String,
        /// What this topic accepts.
        expected: String,
    },
    /// `issued_at` beyond the allowed clock skew in the future.
    #[error("issued_at is {ahead_s} s in the future (max_clock_skew {skew_s} s)")]
    IssuedInFuture {
        /// Seconds ahead of the cabinet's clock.
        ahead_s: u64,
        /// The allowance.
        skew_s: u64,
    },
    /// `expires_at` is not after now.
    #[error("expired {ago_s} s ago")]
    Expired {
        /// Seconds since expiry.
        ago_s: u64,
    },
    /// `expires_at - issued_at` over the maximum (or negative).
    #[error("validity of {validity_s} s is over max_validity ({max_s} s)")]
    ValidityTooLong {
        /// `expires_at - issued_at` in seconds (negative validity is reported as malformed).
        validity_s: u64,
        /// The maximum.
        max_s: u64,
    },
    /// The key may not sign this action.
    #[error("key {kid:?} may not sign action {action:?}")]
    ActionNotAllowed {
        /// The signer.
        kid: String,
        /// The action (bounded, as sent).
        action: String,
    },
    /// The key may not sign desired configurations.
    #[error("key {0:?} may not sign desired configurations (desired_config = false)")]
    DesiredNotAllowed(String),
}

/// Every [`AuthError::reason`], for pre-registering the metric's series.
pub const REASONS: [&str; 15] = [
    "too_large",
    "unsigned",
    "malformed",
    "bad_alg",
    "bad_header",
    "unknown_kid",
    "bad_signature",
    "bad_claim",
    "wrong_cabinet",
    "issued_in_future",
    "expired",
    "validity_too_long",
    "action_not_allowed",
    "desired_not_allowed",
    // Reserved for the daemon's id window: an authentic message whose id was seen before.
    "replayed",
];

impl AuthError {
    /// The fixed label of this failure (`cabinetd_auth_rejected_total{reason}`, event data).
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::TooLarge { .. } => "too_large",
            AuthError::Unsigned => "unsigned",
            AuthError::Malformed(_) => "malformed",
            AuthError::Algorithm(_) => "bad_alg",
            AuthError::Header(_) => "bad_header",
            AuthError::UnknownKid(_) => "unknown_kid",
            AuthError::Signature(_) => "bad_signature",
            AuthError::Claim { .. } => "bad_claim",
            AuthError::Cabinet { .. } => "wrong_cabinet",
            AuthError::IssuedInFuture { .. } => "issued_in_future",
            AuthError::Expired { .. } => "expired",
            AuthError::ValidityTooLong { .. } => "validity_too_long",
            AuthError::ActionNotAllowed { .. } => "action_not_allowed",
            AuthError::DesiredNotAllowed(_) => "desired_not_allowed",
        }
    }
}

/// A refused message, with what may be told about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The failed check.
    pub error: AuthError,
    /// The header's `kid`, when it had a sane shape (`[A-Za-z0-9._-]{1,64}`).
    pub kid: Option<String>,
    /// The command id, when the payload decoded and held a string id of 1..=128 bytes.
    pub id: Option<String>,
    /// The signature verified with a trusted key (the failure is in the claims).
    pub authentic: bool,
    /// The payload's JSON object, only when `authentic` (e.g. the `version` of an expired
    /// retained desired configuration that is already the running one).
    pub claims: Option<Box<Map<String, Value>>>,
}

impl Rejected {
    fn new(error: AuthError) -> Self {
        Rejected {
            error,
            kid: None,
            id: None,
            authentic: false,
            claims: None,
        }
    }

    /// [`AuthError::reason`].
    pub fn reason(&self) -> &'static str {
        self.error.reason()
    }

    /// The id that may get a `rejected` result: only of an authentic message (SPEC).
    pub fn result_id(&self) -> Option<&str> {
        self.id.as_deref().filter(|_| self.authentic)
    }

    /// `data` of the `auth_rejected` event: `{kid, reason, id}` (never the payload).
    pub fn event_data(&self) -> Value {
        serde_json::json!({
            "kid": self.kid,
            "reason": self.reason(),
            "id": self.id,
        })
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

/// A message that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The signer.
    pub kid: String,
    /// The decoded payload (JSON), to hand to the command or desired-config parser.
    pub payload: Vec<u8>,
    /// The same, parsed.
    pub claims: Map<String, Value>,
    /// The command id (commands), if the payload has a string `id`.
    pub id: Option<String>,
    /// The command action (commands).
    pub action: Option<String>,
    /// `issued_at`.
    pub issued_at: SystemTime,
    /// `expires_at`.
    pub expires_at: SystemTime,
}

/// What [`accept`] lets through.
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    /// A verified JWS.
    Signed(Verified),
    /// Plain v1 JSON, accepted because `require_signed = false`.
    Plain(Vec<u8>),
}

impl Accepted {
    /// The JSON payload to parse.
    pub fn payload(&self) -> &[u8] {
        match self {
            Accepted::Signed(v) => &v.payload,
            Accepted::Plain(p) => p,
        }
    }

    /// The signer's `kid` (none for plain JSON).
    pub fn kid(&self) -> Option<&str> {
        match self {
            Accepted::Signed(v) => Some(&v.kid),
            Accepted::Plain(_) => None,
        }
    }
}

/// The daemon's entry point: a message of a command or desired-config topic, checked under
/// `[security]`. With `require_signed = false` plain JSON (first non-blank byte `{`) passes
/// unchecked; a JWS is always verified.
pub fn accept(
    payload: &[u8],
    kind: TopicKind,
    security: &SecurityConfig,
    cabinet_id: &str,
    now: SystemTime,
) -> Result<Accepted, Rejected> {
    if payload.len() > kind.max_bytes() {
        return Err(Rejected::new(AuthError::TooLarge {
            size: payload.len(),
            limit: kind.max_bytes(),
        }));
    }
    if !security.require_signed && looks_like_json(payload) {
        return Ok(Accepted::Plain(payload.to_vec()));
    }
    verify(
        payload,
        kind,
        &security.keys,
        &security.policy,
        cabinet_id,
        now,
    )
    .map(Accepted::Signed)
}

fn looks_like_json(payload: &[u8]) -> bool {
    payload
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

/// The JOSE header: exactly these parameters, each at most once (serde refuses duplicates).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
    cty: Option<String>,
    crit: Option<Value>,
}

fn is_kid(s: &str) -> bool {
    (1..=MAX_KID_CHARS).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn b64(segment: &[u8], what: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|e| AuthError::Malformed(format!("{what} is not base64url without padding: {e}")))
}

fn time_claim(claims: &Map<String, Value>, claim: &'static str) -> Result<SystemTime, AuthError> {
    match claims.get(claim) {
        Some(Value::String(s)) => humantime::parse_rfc3339_weak(s).map_err(|e| AuthError::Claim {
            claim,
            problem: format!("not an RFC 3339 UTC time ({e})"),
        }),
        Some(_) => Err(AuthError::Claim {
            claim,
            problem: "must be an RFC 3339 string".into(),
        }),
        None => Err(AuthError::Claim {
            claim,
            problem: "missing".into(),
        }),
    }
}

/// Bounded for messages: an action name as sent is attacker-controlled.
fn bounded(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Verify a JWS compact token received on a topic of `kind` (SPEC §3 "Signed messages").
pub fn verify(
    token: &[u8],
    kind: TopicKind,
    keys: &TrustedKeys,
    policy: &SecurityPolicy,
    cabinet_id: &str,
    now: SystemTime,
) -> Result<Verified, Rejected> {
    if token.len() > kind.max_bytes() {
        return Err(Rejected::new(AuthError::TooLarge {
            size: token.len(),
            limit: kind.max_bytes(),
        }));
    }
    // Tolerate the newline of a file or a shell pipe; nothing else around the token.
    let token = token.trim_ascii_end();
    if looks_like_json(token) {
        return Err(Rejected::new(AuthError::Unsigned));
    }
    let mut parts = token.split(|b| *b == b'.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejected::new(AuthError::Malformed(
            "not three segments separated by '.'".into(),
        )));
    };
    if h64.len() > MAX_HEADER_B64 {
        return Err(Rejected::new(AuthError::Malformed(format!(
            "header segment over {MAX_HEADER_B64} characters"
        ))));
    }
    let header = b64(h64, "header").map_err(Rejected::new)?;
    let raw: Value = serde_json::from_slice(&header)
        .map_err(|e| Rejected::new(AuthError::Malformed(format!("header is not JSON: {e}"))))?;
    let Some(obj) = raw.as_object() else {
        return Err(Rejected::new(AuthError::Malformed(
            "header is not a JSON object".into(),
        )));
    };
    // The kid is reported even when the header is refused, when it has a sane shape.
    let kid_seen = obj
        .get("kid")
        .and_then(Value::as_str)
        .filter(|k| is_kid(k))
        .map(str::to_owned);
    let with_kid = |e: AuthError| Rejected {
        kid: kid_seen.clone(),
        ..Rejected::new(e)
    };
    match obj.get("alg") {
        Some(Value::String(a)) if a == "EdDSA" => {}
        Some(Value::String(a)) => return Err(with_kid(AuthError::Algorithm(bounded(a)))),
        _ => return Err(with_kid(AuthError::Algorithm("(missing)".into()))),
    }
    let header: Header =
        serde_json::from_slice(&header).map_err(|e| with_kid(AuthError::Header(e.to_string())))?;
    if header.crit.is_some() {
        return Err(with_kid(AuthError::Header(
            "crit: no extension is understood".into(),
        )));
    }
    let _ = (header.alg, header.typ, header.cty);
    let Some(kid) = header.kid.filter(|k| is_kid(k)) else {
        return Err(with_kid(AuthError::UnknownKid("(missing)".into())));
    };
    let Some(key) = keys.get(&kid) else {
        return Err(with_kid(AuthError::UnknownKid(kid)));
    };
    // Decode the payload before checking the signature only to report the id of a forged
    // message in the event (SPEC: "the id when it parsed"); nothing else of it is used.
    let payload = b64(p64, "payload").map_err(&with_kid)?;
    let claims: Option<Map<String, Value>> = serde_json::from_slice(&payload).ok();
    let id = claims
        .as_ref()
        .and_then(|c| c.get("id"))
        .and_then(Value::as_str)
        .filter(|id| (1..=MAX_ID_BYTES).contains(&id.len()))
        .map(str::to_owned);
    let signature = b64(s64, "signature").map_err(|e| Rejected {
        id: id.clone(),
        ..with_kid(e)
    })?;
    let signed_len = h64.len() + 1 + p64.len();
    let signed = &token[..signed_len];
    let public = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key.public_key);
    if public.verify(signed, &signature).is_err() {
        return Err(Rejected {
            id,
            ..with_kid(AuthError::Signature(kid.clone()))
        });
    }
    // Authentic from here on: a failure may be answered with a `rejected` result.
    let Some(claims) = claims else {
        return Err(Rejected {
            authentic: true,
            ..with_kid(AuthError::Malformed("payload is not a JSON object".into()))
        });
    };
    let fail = |error: AuthError| Rejected {
        error,
        kid: Some(kid.clone()),
        id: id.clone(),
        authentic: true,
        claims: Some(Box::new(claims.clone())),
    };
    let (issued_at, expires_at) =
        check_claims(&claims, kind, key, policy, cabinet_id, now).map_err(fail)?;
    let action = claims
        .get("action")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(Verified {
        kid,
        payload,
        id,
        action,
        issued_at,
        expires_at,
        claims,
    })
}

/// The claim checks, in SPEC order, of an authentic payload; returns (issued_at, expires_at).
fn check_claims(
    claims: &Map<String, Value>,
    kind: TopicKind,
    key: &TrustedKey,
    policy: &SecurityPolicy,
    cabinet_id: &str,
    now: SystemTime,
) -> Result<(SystemTime, SystemTime), AuthError> {
    let cabinet = match claims.get("cabinet") {
        Some(Value::String(c)) => c.as_str(),
        Some(_) => {
            return Err(AuthError::Claim {
                claim: "cabinet",
                problem: "must be a string".into(),
            })
        }
        None => {
            return Err(AuthError::Claim {
                claim: "cabinet",
                problem: "missing".into(),
            })
        }
    };
    let cabinet_ok = match kind {
        TopicKind::All => cabinet == "all" || cabinet == cabinet_id,
        TopicKind::Cabinet | TopicKind::Desired => cabinet == cabinet_id,
    };
    if !cabinet_ok {
        let expected = match kind {
            TopicKind::All => format!("P/all/cmd accepts \"all\" or {cabinet_id:?}"),
            TopicKind::Cabinet => format!(
                "this cabinet's topic accepts only {cabinet_id:?} (\"all\" only on P/all/cmd)"
            ),
            TopicKind::Desired => format!("this cabinet is {cabinet_id:?}"),
        };
        return Err(AuthError::Cabinet {
            found: bounded(cabinet),
            expected,
        });
    }
    let issued_at = time_claim(claims, "issued_at")?;
    let expires_at = time_claim(claims, "expires_at")?;
    if let Ok(ahead) = issued_at.duration_since(now) {
        if ahead > policy.max_clock_skew {
            return Err(AuthError::IssuedInFuture {
                ahead_s: ahead.as_secs(),
                skew_s: policy.max_clock_skew.as_secs(),
            });
        }
    }
    // Expired when now >= expires_at ("expires_at present and after now").
    if let Ok(ago) = now.duration_since(expires_at) {
        return Err(AuthError::Expired {
            ago_s: ago.as_secs(),
        });
    }
    match expires_at.duration_since(issued_at) {
        Ok(validity) if validity > policy.max_validity => {
            return Err(AuthError::ValidityTooLong {
                validity_s: validity.as_secs(),
                max_s: policy.max_validity.as_secs(),
            })
        }
        Ok(_) => {}
        Err(_) => {
            return Err(AuthError::Claim {
                claim: "expires_at",
                problem: "before issued_at".into(),
            })
        }
    }
    match kind {
        TopicKind::Desired => {
            if !key.desired_config {
                return Err(AuthError::DesiredNotAllowed(key.kid.clone()));
            }
        }
        TopicKind::Cabinet | TopicKind::All => {
            let action = match claims.get("action") {
                Some(Value::String(a)) => a,
                _ => {
                    return Err(AuthError::Claim {
                        claim: "action",
                        problem: "missing or not a string".into(),
                    })
                }
            };
            if !key.allows(action) {
                return Err(AuthError::ActionNotAllowed {
                    kid: key.kid.clone(),
                    action: bounded(action),
                });
            }
        }
    }
    Ok((issued_at, expires_at))
}

/// Limits how many `auth_rejected` events and log lines a flood of bad messages can cause (the
/// metric still counts every one): a token bucket of `burst` events refilled at `per_minute`;
/// the first event let through after a suppressed stretch says how many were suppressed.
/// Pure: the caller passes the time.
#[derive(Debug, Clone)]
pub struct RejectionThrottle {
    burst: f64,
    per_second: f64,
    tokens: f64,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RejectionThrottle {
    /// A throttle letting `burst` events through at once and `per_minute` on average.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        RejectionThrottle {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_minute) / 60.0,
            tokens: f64::from(burst.max(1)),
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)`: emit the event, noting `n` suppressed since the last one; `None`: suppress.
    pub fn admit(&mut self, now: std::time::Instant) -> Option<u64> {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

impl Default for RejectionThrottle {
    /// 20 at once, 10 a minute.
    fn default() -> Self {
        RejectionThrottle::new(20, 10)
    }
}

#[cfg(test)]
mod tests;
