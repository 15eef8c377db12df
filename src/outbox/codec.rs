//! On-disk encoding of outbox keys and values (pure, no I/O).
//!
//! Key: the record's `seq` as a big-endian `u64`, so sled's byte order is seq order (FIFO).
//! Value, version 1: `[0x01][ts_ms: u64 BE][record JSON with its seq]`. The timestamp is the
//! record's acquisition time in milliseconds since the Unix epoch, kept outside the JSON so the
//! oldest-record age can be computed without parsing; the JSON is spliced verbatim into envelopes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Current value format version.
pub const VALUE_VERSION: u8 = 1;
/// Bytes before the JSON in a version 1 value.
pub const HEADER_LEN: usize = 1 + 8;

/// The sled key of `seq`.
pub fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The seq of a sled key; `None` if the key is not 8 bytes (never written by us).
pub fn seq_of(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

/// Milliseconds since the epoch (0 for times before it).
pub fn millis(ts: SystemTime) -> u64 {
    ts.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Inverse of [`millis`].
pub fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Encode a value.
pub fn encode_value(ts: SystemTime, json: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + json.len());
    v.push(VALUE_VERSION);
    v.extend_from_slice(&millis(ts).to_be_bytes());
    v.extend_from_slice(json);
    v
}

/// A decoded value, borrowing the stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// Acquisition time, ms since the epoch.
    pub ts_ms: u64,
    /// The record JSON with its seq.
    pub json: &'a [u8],
}

/// Decode a value; `None` for an unknown version or a truncated header.
pub fn decode_value(v: &[u8]) -> Option<Decoded<'_>> {
    if v.len() < HEADER_LEN || v[0] != VALUE_VERSION {
        return None;
    }
    let ts_ms = u64::from_be_bytes(v[1..HEADER_LEN].try_into().ok()?);
    Some(Decoded {
        ts_ms,
        json: &v[HEADER_LEN..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_like_seqs() {
        let mut keys: Vec<[u8; 8]> = [300u64, 2, 1 << 40, 255, 256]
            .iter()
            .map(|s| key(*s))
            .collect();
        keys.sort();
        let seqs: Vec<u64> = keys.iter().map(|k| seq_of(k).unwrap()).collect();
        assert_eq!(seqs, vec![2, 255, 256, 300, 1 << 40]);
        assert_eq!(seq_of(b"short"), None);
    }

    #[test]
    fn value_round_trips_and_rejects_unknown_versions() {
        let ts = from_millis(1_795_680_000_123);
        let v = encode_value(ts, br#"{"seq":1}"#);
        let d = decode_value(&v).unwrap();
        assert_eq!(d.ts_ms, 1_795_680_000_123);
        assert_eq!(d.json, br#"{"seq":1}"#);
        let mut bad = v.clone();
        bad[0] = 2;
        assert_eq!(decode_value(&bad), None);
        assert_eq!(decode_value(&v[..5]), None);
    }
}
