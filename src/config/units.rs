//! Pure parsers for the value syntaxes of the config: durations, byte sizes, broker URLs, names,
//! time zones, and the "did you mean" suggestion. Each returns a message fit to follow the key's name.

use std::time::Duration;

use super::Broker;

/// Parses a humantime duration (`"1s"`, `"500ms"`, `"1m 30s"`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}); write e.g. \"1s\" or \"500ms\""))
}

/// Parses a byte size: `"256MiB"`, `"2 MiB"`, `"1GB"`, `"512"`, `"1.5GiB"` (binary units are
/// powers of 1024, decimal units powers of 1000; the unit is case-sensitive except `k`/`K`).
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = (t[..split].replace('_', ""), t[split..].trim());
    let bad = || format!("invalid byte size {s:?}; write e.g. \"256MiB\", \"2 MiB\" or \"1GB\"");
    if num.is_empty() {
        return Err(bad());
    }
    let mult: u64 = match unit {
        "" | "B" => 1,
        "k" | "K" | "kB" | "KB" => 1000,
        "M" | "MB" => 1000_u64.pow(2),
        "G" | "GB" => 1000_u64.pow(3),
        "T" | "TB" => 1000_u64.pow(4),
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        "Ti" | "TiB" => 1 << 40,
        _ => return Err(bad()),
    };
    if num.contains('.') {
        let x: f64 = num.parse().map_err(|_| bad())?;
        let bytes = x * mult as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(format!("byte size {s:?} is too large"));
        }
        Ok(bytes as u64)
    } else {
        let n: u64 = num.parse().map_err(|_| bad())?;
        n.checked_mul(mult)
            .ok_or_else(|| format!("byte size {s:?} is too large"))
    }
}

/// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (IPv6 hosts in brackets).
pub(crate) fn parse_broker(s: &str) -> Result<Broker, String> {
    let bad = |why: &str| {
        format!("invalid broker URL {s:?}: {why}; write mqtt://host[:port] or mqtts://host[:port]")
    };
    let (tls, rest) = if let Some(r) = s.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = s.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(bad("the scheme must be mqtt:// or mqtts://"));
    };
    let default_port = if tls { 8883 } else { 1883 };
    if rest.contains(['/', '?', '#', '@']) {
        return Err(bad("no path, query or credentials allowed"));
    }
    let (host, port) = split_host_port(rest).map_err(|w| bad(&w))?;
    Ok(Broker {
        tls,
        host,
        port: port.unwrap_or(default_port),
    })
}

/// Splits `host[:port]`; `[v6]` hosts keep no brackets. The port, if any, must be 1..=65535.
pub(crate) fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(r) = s.strip_prefix('[') {
        let end = r.find(']').ok_or("unclosed [ in the host")?;
        let host = &r[..end];
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{host:?} is not an IPv6 address"));
        }
        match &r[end + 1..] {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or("expected :port after ]")?),
            ),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if host.contains(':') && !s.starts_with('[') {
        return Err("write IPv6 hosts in brackets, e.g. [::1]:1883".into());
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err(format!("{host:?} is not a valid host name"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("port {p:?} must be a number 1..=65535")),
        },
    };
    Ok((host.to_string(), port))
}

/// `[a-z0-9-]{1,64}`: the cabinet id, used in MQTT topics.
pub(crate) fn is_cabinet_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `[a-z0-9_-]+`: a device name (at most 64 characters, it is part of every point name).
pub(crate) fn is_device_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `[a-z0-9_]+`: a point name within its device (at most 64 characters).
pub(crate) fn is_point_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Levenshtein distance (characters).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Resolves an IANA time zone name (`cabinet.timezone`): the system tzdb first
/// (`/usr/share/zoneinfo`, kept current by Debian's `tzdata`), the copy bundled in the binary as
/// fallback, so a cabinet with a broken tzdata still keeps local time and tests do not depend on
/// the host.
pub fn time_zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    match jiff::tz::db().get(name) {
        Ok(tz) => Ok(tz),
        Err(_) => jiff::tz::TimeZoneDatabase::bundled()
            .get(name)
            .map_err(|_| format!("unknown IANA time zone {name:?}")),
    }
}

/// The closest known word within edit distance 2 (first one wins a tie).
pub(crate) fn suggest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zones_resolve() {
        assert!(time_zone("Europe/Paris").is_ok());
        assert!(time_zone("UTC").is_ok());
        assert!(time_zone("Europe/Dijon").is_err());
    }

    #[test]
    fn bundled_tzdb_knows_paris() {
        // The fallback must stand on its own when the host has no /usr/share/zoneinfo.
        let tz = jiff::tz::TimeZoneDatabase::bundled()
            .get("Europe/Paris")
            .unwrap();
        let summer: jiff::Timestamp = "2026-07-01T12:00:00Z".parse().unwrap();
        assert_eq!(tz.to_offset(summer).seconds(), 7200);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("1 fortnight").is_err());
        assert!(parse_duration("10").is_err());
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("2 MiB"), Ok(2 << 20));
        assert_eq!(parse_bytes("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("1kB"), Ok(1000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("512 B"), Ok(512));
        assert_eq!(parse_bytes("1.5KiB"), Ok(1536));
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
    }

    #[test]
    fn brokers() {
        assert_eq!(
            parse_broker("mqtt://127.0.0.1:1883"),
            Ok(Broker {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1883
            })
        );
        assert_eq!(
            parse_broker("mqtts://broker.example.org"),
            Ok(Broker {
                tls: true,
                host: "broker.example.org".into(),
                port: 8883
            })
        );
        assert_eq!(parse_broker("mqtt://[::1]:1884").unwrap().host, "::1");
        assert_eq!(parse_broker("mqtt://[::1]").unwrap().port, 1883);
        for bad in [
            "tcp://h:1",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://h:1/x",
            "mqtt://u:p@h",
            "mqtt://::1",
            "mqtt://h h",
        ] {
            assert!(parse_broker(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(is_cabinet_id("dijon-017"));
        assert!(!is_cabinet_id("Dijon"));
        assert!(!is_cabinet_id("a_b"));
        assert!(!is_cabinet_id(""));
        assert!(!is_cabinet_id(&"a".repeat(65)));
        assert!(is_cabinet_id(&"a".repeat(64)));
        assert!(is_device_name("meter_main-2"));
        assert!(!is_device_name("meter/main"));
        assert!(is_point_name("voltage_l1"));
        assert!(!is_point_name("voltage-l1"));
    }

    #[test]
    fn did_you_mean() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(suggest("unitid", &["unit_id", "poll"]), Some("unit_id"));
        assert_eq!(suggest("pol", &["unit_id", "poll"]), Some("poll"));
        assert_eq!(suggest("colour", &["unit_id", "poll"]), None);
    }
}
