//! `[security]`, `[safety]` and the mTLS keys of `[uplink]` (issue 12), in the style of the
//! parent: every problem reported at its position, placeholders so the walk goes on.

use std::time::Duration;

use super::super::tree::{Loc, Table as Tbl, Val};
use super::super::units::{is_device_name, is_point_name};
use super::{join, Cx, Unique};
use crate::auth::key::decode_public_key;
use crate::auth::{ActionPattern, SecurityConfig, SecurityPolicy, TrustedKey, TrustedKeys};
use crate::config::{RollbackConfig, SafetyConfig, UplinkConfig};

const SECURITY_KEYS: &[&str] = &[
    "require_signed",
    "max_clock_skew",
    "max_validity",
    "trusted_key",
];
const TRUSTED_KEY_KEYS: &[&str] = &["kid", "public_key", "actions", "desired_config"];
const CONFIG_KEYS: &[&str] = &["confirm_after", "uplink_critical"];
/// A confirmation window over a day would leave a bad configuration running for days.
const CONFIRM_MAX: Duration = Duration::from_secs(24 * 3600);
const SAFETY_KEYS: &[&str] = &[
    "dali_min_system_failure_level",
    "dali_min_power_on_level",
    "desired_may_write",
];
/// A skew over an hour means a broken clock, not a slow one.
const SKEW_MAX: Duration = Duration::from_secs(3600);
/// A signed command valid for more than a month is a standing order, not a command.
const VALIDITY_MAX: Duration = Duration::from_secs(31 * 24 * 3600);
/// Bounds of `uplink.max_incoming_bytes`: room for a desired config, and under the MQTT
/// client's own packet limit (`uplink::CLIENT_MAX_PACKET`).
const INCOMING_MIN: u64 = 16 * 1024;
const INCOMING_MAX: u64 = 16 * 1024 * 1024;

fn is_kid(s: &str) -> bool {
    (1..=crate::auth::MAX_KID_CHARS).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `[security]`. Without the table, or with `require_signed = true` (the default) and no key,
/// the config is refused: a cabinet that accepts nothing from the central post must be chosen
/// (keys), not fallen into, and an unsigned one only on purpose (the demo).
pub(super) fn security(cx: &mut Cx, root: &Tbl, names: &[String]) -> SecurityConfig {
    let mut s = SecurityConfig::default();
    let Some(t) = cx.opt_table(root, "security", "security") else {
        cx.err(
            Loc {
                src: 0,
                line: 1,
                col: 1,
            },
            "missing [security]: security.require_signed is true by default and needs at least one [[security.trusted_key]] (the central post's public key); set security.require_signed = false only for a demo",
        );
        return s;
    };
    let p = "security";
    cx.check_keys(t, p, SECURITY_KEYS);
    let require = cx.opt_bool(t, p, "require_signed");
    if let Some((b, _)) = require {
        s.require_signed = b;
    }
    let mut policy = SecurityPolicy::default();
    if let Some(d) = cx.opt_dur(t, p, "max_clock_skew", Duration::ZERO, SKEW_MAX) {
        policy.max_clock_skew = d;
    }
    if let Some(d) = cx.opt_dur(t, p, "max_validity", Duration::from_secs(1), VALIDITY_MAX) {
        policy.max_validity = d;
    }
    s.policy = policy;
    let mut kids = Unique::new("trusted key kid");
    let mut keys = Vec::new();
    for (i, k) in cx
        .tables(t, "trusted_key", "security.trusted_key")
        .into_iter()
        .enumerate()
    {
        if let Some(key) = trusted_key(cx, k, i, &mut kids) {
            keys.push(key);
        }
    }
    kids.report(cx, names);
    if s.require_signed && keys.is_empty() && t.get("trusted_key").is_none() {
        let loc = require.map_or(t.loc, |(_, loc)| loc);
        cx.err(loc, "security.require_signed is true but no [[security.trusted_key]] is configured: nothing from the central post would be accepted; add its public key(s), or set require_signed = false (demo only)");
    }
    s.keys = TrustedKeys::new(keys);
    s
}

fn trusted_key(cx: &mut Cx, t: &Tbl, i: usize, kids: &mut Unique) -> Option<TrustedKey> {
    let fallback = format!("security.trusted_key[{i}]");
    let kid = cx.req_str(t, &fallback, "kid").and_then(|(kid, loc)| {
        if is_kid(kid) {
            kids.add(kid, loc);
            Some(kid.to_owned())
        } else {
            cx.err(
                loc,
                format!(
                    "{fallback}.kid must be 1 to 64 characters of [A-Za-z0-9._-], found {kid:?}"
                ),
            );
            None
        }
    });
    let p = kid
        .as_ref()
        .map_or(fallback.clone(), |k| format!("security.trusted_key[{k}]"));
    let p = p.as_str();
    cx.check_keys(t, p, TRUSTED_KEY_KEYS);
    let public_key = cx
        .req_str(t, p, "public_key")
        .and_then(|(s, loc)| match decode_public_key(s) {
            Ok(k) => Some(k),
            Err(m) => {
                cx.err(loc, format!("{p}.public_key: {m} (an Ed25519 key, a JWK's \"x\"; `cabinetd key generate` prints it)"));
                None
            }
        });
    let mut actions = Vec::new();
    let mut actions_ok = true;
    if let Some(e) = t.get("actions") {
        let full = join(p, "actions");
        match &e.node.val {
            Val::Array(items) => {
                for n in items {
                    match &n.val {
                        Val::Str(a) => {
                            match ActionPattern::parse(a, &crate::metrics::SPEC_ACTIONS) {
                                Ok(pat) => actions.push(pat),
                                Err(m) => {
                                    actions_ok = false;
                                    cx.err(n.loc, format!("{full}: {m}"));
                                }
                            }
                        }
                        _ => {
                            actions_ok = false;
                            cx.wrong_type(n, "an action name string", &full);
                        }
                    }
                }
            }
            _ => {
                actions_ok = false;
                cx.wrong_type(
                    &e.node,
                    "an array of actions like [\"light.*\", \"point.write\"]",
                    &full,
                );
            }
        }
    }
    let desired_config = cx.opt_bool(t, p, "desired_config").is_some_and(|(b, _)| b);
    if !actions_ok {
        return None;
    }
    Some(TrustedKey {
        kid: kid?,
        public_key: public_key?,
        actions,
        desired_config,
    })
}

/// `[safety]`: defaults when absent.
pub(super) fn safety(cx: &mut Cx, root: &Tbl) -> SafetyConfig {
    let mut s = SafetyConfig::default();
    let Some(t) = cx.opt_table(root, "safety", "safety") else {
        return s;
    };
    let p = "safety";
    cx.check_keys(t, p, SAFETY_KEYS);
    if let Some((x, _)) = cx.opt_num(t, p, "dali_min_system_failure_level", 0.0, 100.0) {
        s.dali_min_system_failure_level = x;
    }
    if let Some((x, _)) = cx.opt_num(t, p, "dali_min_power_on_level", 0.0, 100.0) {
        s.dali_min_power_on_level = x;
    }
    if let Some(e) = t.get("desired_may_write") {
        let full = "safety.desired_may_write";
        match &e.node.val {
            Val::Array(items) => {
                for n in items {
                    match &n.val {
                        Val::Str(name)
                            if name
                                .split_once('/')
                                .is_some_and(|(d, pt)| is_device_name(d) && is_point_name(pt)) =>
                        {
                            s.desired_may_write.push(name.clone());
                        }
                        Val::Str(name) => cx.err(
                            n.loc,
                            format!(
                                "{full}: expected a point name \"DEVICE/POINT\", found {name:?}"
                            ),
                        ),
                        _ => cx.wrong_type(n, "a point name string \"DEVICE/POINT\"", full),
                    }
                }
            }
            _ => cx.wrong_type(&e.node, "an array of point names", full),
        }
    }
    s
}

/// `uplink.cert_file` / `key_file` (together, and only with an `mqtts://` broker) and
/// `uplink.max_incoming_bytes`.
pub(super) fn uplink_tls(cx: &mut Cx, t: &Tbl, u: &mut UplinkConfig) {
    let p = "uplink";
    u.cert_file = cx.opt_path(t, p, "cert_file");
    u.key_file = cx.opt_path(t, p, "key_file");
    for (given, missing) in [("cert_file", "key_file"), ("key_file", "cert_file")] {
        if let (Some(e), None) = (t.get(given), t.get(missing)) {
            cx.err(
                e.key_loc,
                format!("uplink.{given} needs uplink.{missing}: the client certificate and its private key go together"),
            );
        }
    }
    if let Some(e) = t.get("cert_file") {
        if !u.brokers.is_empty() && !u.brokers.iter().any(|b| b.tls) {
            cx.err(
                e.key_loc,
                "uplink.cert_file is used only with an mqtts:// broker, and every uplink.broker is mqtt://",
            );
        }
    }
    if let Some(n) = cx.opt_bytes(t, p, "max_incoming_bytes", INCOMING_MIN, INCOMING_MAX) {
        u.max_incoming_bytes = n as usize;
    }
}

/// `[config]` (local files only, like `[safety]`): defaults when absent.
pub(super) fn rollback(cx: &mut Cx, root: &Tbl) -> RollbackConfig {
    let mut r = RollbackConfig::default();
    let Some(t) = cx.opt_table(root, "config", "config") else {
        return r;
    };
    let p = "config";
    cx.check_keys(t, p, CONFIG_KEYS);
    if let Some(d) = cx.opt_dur(t, p, "confirm_after", Duration::ZERO, CONFIRM_MAX) {
        r.confirm_after = d;
    }
    if let Some(e) = t.get("uplink_critical") {
        let full = "config.uplink_critical";
        match &e.node.val {
            Val::Array(items) => {
                for n in items {
                    match &n.val {
                        // The device may come from a desired configuration: only its shape is
                        // checked here.
                        Val::Str(name) if is_device_name(name) => {
                            r.uplink_critical.push(name.clone())
                        }
                        Val::Str(name) => cx.err(
                            n.loc,
                            format!("{full}: expected a device name [a-z0-9_-]+, found {name:?}"),
                        ),
                        _ => cx.wrong_type(n, "a device name string", full),
                    }
                }
            }
            _ => cx.wrong_type(&e.node, "an array of device names", full),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use crate::config::{load_sources, Config, Source};

    const BASE: &str = "[cabinet]\nid = \"c-1\"\nlatitude = 47.3\nlongitude = 5.0\n[storage]\npath = \"/tmp/x\"\n[uplink]\nbroker = \"mqtts://127.0.0.1\"\nca_file = \"/ca.pem\"\n";
    const KEY: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn load(b: &str) -> Result<Config, Vec<String>> {
        load_sources(&[
            Source {
                name: "a.toml".into(),
                text: BASE.into(),
            },
            Source {
                name: "b.toml".into(),
                text: b.into(),
            },
        ])
        .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn security_defaults_and_keys() {
        let c = load(&format!("[security]\n[[security.trusted_key]]\nkid = \"ops-2026\"\npublic_key = \"{KEY}\"\nactions = [\"light.*\", \"point.write\", \"*\"]\n[[security.trusted_key]]\nkid = \"cfg\"\npublic_key = \"{KEY}\"\ndesired_config = true\n")).unwrap();
        let s = &c.security;
        assert!(s.require_signed);
        assert_eq!(s.policy.max_clock_skew.as_secs(), 300);
        assert_eq!(s.policy.max_validity.as_secs(), 86_400);
        let k = s.keys.get("ops-2026").unwrap();
        assert!(k.allows("light.set") && !k.desired_config);
        assert_eq!(k.public_key[0], 0xd7);
        let cfg = s.keys.get("cfg").unwrap();
        assert!(cfg.desired_config && cfg.actions.is_empty());
        let c = load(
            "[security]\nrequire_signed = false\nmax_clock_skew = \"30s\"\nmax_validity = \"1h\"\n",
        )
        .unwrap();
        assert!(!c.security.require_signed);
        assert_eq!(c.security.policy.max_clock_skew.as_secs(), 30);
        assert!(c.security.keys.is_empty());
    }

    #[test]
    fn security_errors_name_file_line_col() {
        assert_eq!(
            load("[security]\nrequire_signed = true\n").unwrap_err(),
            ["b.toml:2:18: security.require_signed is true but no [[security.trusted_key]] is configured: nothing from the central post would be accepted; add its public key(s), or set require_signed = false (demo only)"]
        );
        let e = load(&format!("[security]\n[[security.trusted_key]]\nkid = \"k\"\npublic_key = \"{KEY}=\"\nactions = [\"lights.*\", \"point.wrte\", 3]\n[[security.trusted_key]]\nkid = \"k\"\npublic_key = \"AAAA\"\ncolour = 1\n[[security.trusted_key]]\nkid = \"bad kid\"\npublic_key = \"{KEY}\"\n")).unwrap_err();
        let want = [
            "b.toml:4:14: security.trusted_key[k].public_key: not base64url without padding",
            "b.toml:5:12: security.trusted_key[k].actions: unknown action family \"lights.*\"",
            "b.toml:5:24: security.trusted_key[k].actions: unknown action \"point.wrte\"",
            "b.toml:5:38: expected an action name string",
            "b.toml:7:7: duplicate trusted key kid k (first defined at b.toml:3)",
            "b.toml:8:14: security.trusted_key[k].public_key: an Ed25519 public key is 32 bytes, found 3",
            "b.toml:9:1: unknown key security.trusted_key[k].colour",
            "b.toml:11:7: security.trusted_key[2].kid must be 1 to 64 characters",
        ];
        assert_eq!(e.len(), want.len(), "{e:#?}");
        for (got, want) in e.iter().zip(want) {
            assert!(
                got.starts_with(want),
                "{got}\n  does not start with\n{want}"
            );
        }
    }

    #[test]
    fn safety_section() {
        let open = "[security]\nrequire_signed = false\n";
        let c = load(open).unwrap();
        assert_eq!(c.safety.dali_min_system_failure_level, 50.0);
        assert!(c.safety.desired_may_write.is_empty());
        let c = load(&format!("{open}[safety]\ndali_min_system_failure_level = 70\ndali_min_power_on_level = 0\ndesired_may_write = [\"tc-12/plan\"]\n")).unwrap();
        assert_eq!(c.safety.dali_min_system_failure_level, 70.0);
        assert_eq!(c.safety.dali_min_power_on_level, 0.0);
        assert_eq!(c.safety.desired_may_write, ["tc-12/plan"]);
        assert_eq!(
            load(&format!("{open}[safety]\ndali_min_power_on_level = 101\ndesired_may_write = [\"plan\"]\n")).unwrap_err(),
            [
                "b.toml:4:27: safety.dali_min_power_on_level must be between 0 and 100, found 101",
                "b.toml:5:22: safety.desired_may_write: expected a point name \"DEVICE/POINT\", found \"plan\"",
            ]
        );
    }

    #[test]
    fn mtls_keys_go_together_with_an_mqtts_broker() {
        let open = "[security]\nrequire_signed = false\n";
        let c = load(&format!("{open}[uplink]\ncert_file = \"/c.pem\"\nkey_file = \"/c.key\"\nmax_incoming_bytes = \"2MiB\"\n")).unwrap();
        assert_eq!(c.uplink.cert_file.unwrap().to_str(), Some("/c.pem"));
        assert_eq!(c.uplink.max_incoming_bytes, 2 << 20);
        assert_eq!(load(open).unwrap().uplink.max_incoming_bytes, 1 << 20);
        assert_eq!(
            load(&format!("{open}[uplink]\ncert_file = \"/c.pem\"\n")).unwrap_err(),
            ["b.toml:4:1: uplink.cert_file needs uplink.key_file: the client certificate and its private key go together"]
        );
        assert_eq!(
            load(&format!("{open}[uplink]\nbroker = \"mqtt://h\"\ncert_file = \"/c.pem\"\nkey_file = \"/k\"\n")).unwrap_err(),
            ["b.toml:5:1: uplink.cert_file is used only with an mqtts:// broker, and every uplink.broker is mqtt://"]
        );
        assert_eq!(
            load(&format!("{open}[uplink]\nmax_incoming_bytes = \"64MiB\"\n"))
                .unwrap_err()
                .len(),
            1
        );
    }
}
