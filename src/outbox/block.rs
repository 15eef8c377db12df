//! On-disk encoding of an outbox *block* (layout version 2, pure, no I/O).
//!
//! A block holds consecutive records of one stream: seqs `first_seq ..= first_seq + count - 1`,
//! the sled key being `first_seq` as a big-endian `u64`. Its records are kept exactly as they go
//! on the wire: each record's JSON object (with its seq), joined by `,`, so a run of records is
//! one slice that is spliced between the `[` and `]` of an envelope.
//!
//! Value: `[version = 2][codec: 0 raw | 1 zstd][count: u32 BE][first_ts_ms: u64 BE][content]`,
//! where `content` (zstd-compressed when `codec = 1`) is `count` LEB128 lengths, one per record,
//! followed by the joined JSON (`len_0` bytes, `,`, `len_1` bytes, …). `first_ts_ms` is the
//! acquisition time of the first record (the oldest-record age without decompressing).

use std::io;

/// Layout version of block values (the v1 layout stored one record per key, see
/// [`super::codec`]).
pub const BLOCK_VERSION: u8 = 2;
/// Bytes before the content.
pub const HEADER_LEN: usize = 1 + 1 + 4 + 8;
/// Codec byte: content stored as is.
pub const CODEC_RAW: u8 = 0;
/// Codec byte: content is one zstd frame.
pub const CODEC_ZSTD: u8 = 1;
/// zstd level of stored blocks: the benchmark's records shrink ~20× at 1 to 3 alike; higher
/// levels cost CPU for nothing on these small blocks.
pub const ZSTD_LEVEL: i32 = 3;

/// Records of a block being filled (the open tail of a stream, in memory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    /// Seq of the first record (0 while empty).
    pub first_seq: u64,
    /// Acquisition time of the first record, ms since the epoch.
    pub first_ts_ms: u64,
    /// The records' JSON joined by `,`.
    pub body: Vec<u8>,
    /// End offset in `body` of each record (exclusive, the separator not included).
    pub ends: Vec<u32>,
}

impl Records {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// No record.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Seq of the last record (`first_seq - 1` when empty).
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.ends.len() as u64 - 1
    }

    /// Start a record with seq `seq` at the end of the body; the caller writes its JSON into
    /// [`Records::body`] and then calls [`Records::end_record`].
    pub fn begin_record(&mut self, seq: u64, ts_ms: u64) {
        if self.ends.is_empty() {
            self.first_seq = seq;
            self.first_ts_ms = ts_ms;
        } else {
            self.body.push(b',');
        }
    }

    /// Close the record begun last.
    pub fn end_record(&mut self) {
        self.ends
            .push(u32::try_from(self.body.len()).unwrap_or(u32::MAX));
    }

    /// Undo a record begun but refused (too large): truncate back to `len` body bytes.
    pub fn abort_record(&mut self, body_len: usize) {
        self.body.truncate(body_len);
        if self.ends.is_empty() {
            self.first_seq = 0;
        }
    }

    /// Byte range in `body` of record `i`.
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        let end = self.ends[i] as usize;
        let start = if i == 0 {
            0
        } else {
            self.ends[i - 1] as usize + 1
        };
        start..end
    }

    /// The JSON of records `i..=j`, joined by `,` (one slice of the body).
    pub fn joined(&self, i: usize, j: usize) -> &[u8] {
        &self.body[self.range(i).start..self.range(j).end]
    }

    /// Empty the block, keeping its allocations.
    pub fn clear(&mut self) {
        self.first_seq = 0;
        self.first_ts_ms = 0;
        self.body.clear();
        self.ends.clear();
    }

    /// Encode as a stored value (zstd when `compressor` is given; see [`Records::encode_range`]).
    pub fn encode(&self, compressor: Option<&mut zstd::bulk::Compressor<'static>>) -> Vec<u8> {
        if self.is_empty() {
            return Vec::new();
        }
        self.encode_range(0, self.len(), self.first_ts_ms, compressor)
    }

    /// Encode records `from..to` as a stored value whose key is `first_seq + from`, with
    /// `first_ts_ms` in its header. Compressed with zstd when a compressor is given and that is
    /// smaller (a few records of a chunk may not compress).
    pub fn encode_range(
        &self,
        from: usize,
        to: usize,
        first_ts_ms: u64,
        compressor: Option<&mut zstd::bulk::Compressor<'static>>,
    ) -> Vec<u8> {
        let body = &self.body[self.range(from).start..self.range(to - 1).end];
        let mut content = Vec::with_capacity((to - from) * 2 + body.len());
        for i in from..to {
            write_varint(&mut content, self.range(i).len() as u64);
        }
        content.extend_from_slice(body);
        let compressed = compressor
            .and_then(|c| c.compress(&content).ok())
            .filter(|c| c.len() < content.len());
        let mut out =
            Vec::with_capacity(HEADER_LEN + compressed.as_ref().map_or(content.len(), Vec::len));
        out.push(BLOCK_VERSION);
        out.push(if compressed.is_some() {
            CODEC_ZSTD
        } else {
            CODEC_RAW
        });
        out.extend_from_slice(&((to - from) as u32).to_be_bytes());
        out.extend_from_slice(&first_ts_ms.to_be_bytes());
        out.extend_from_slice(compressed.as_deref().unwrap_or(&content));
        out
    }

    /// Append the records of `other` (which must start at `self.last_seq() + 1`, or anywhere
    /// when `self` is empty).
    pub fn extend_from(&mut self, other: &Records) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            self.first_seq = other.first_seq;
            self.first_ts_ms = other.first_ts_ms;
        } else {
            self.body.push(b',');
        }
        let base = self.body.len() as u32;
        self.body.extend_from_slice(&other.body);
        self.ends.extend(other.ends.iter().map(|e| e + base));
    }

    /// Drop the records with seq below `seq` (all of them when `seq` is past the last).
    pub fn drop_before(&mut self, seq: u64) {
        if self.is_empty() || seq <= self.first_seq {
            return;
        }
        let n = (seq - self.first_seq) as usize;
        if n >= self.len() {
            self.clear();
            return;
        }
        let cut = self.ends[n - 1] as usize + 1;
        self.body.drain(..cut);
        self.ends.drain(..n);
        for e in &mut self.ends {
            *e -= cut as u32;
        }
        self.first_seq = seq;
    }
}

/// The header of a stored block, readable without decompressing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Number of records.
    pub count: u32,
    /// Acquisition time of the first record.
    pub first_ts_ms: u64,
}

/// Read a block's header; `None` for another version or a truncated value.
pub fn header(v: &[u8]) -> Option<Header> {
    if v.len() < HEADER_LEN || v[0] != BLOCK_VERSION || v[1] > CODEC_ZSTD {
        return None;
    }
    let count = u32::from_be_bytes(v[2..6].try_into().ok()?);
    let first_ts_ms = u64::from_be_bytes(v[6..14].try_into().ok()?);
    (count > 0).then_some(Header { count, first_ts_ms })
}

/// Decode a stored block whose key is `first_seq`; `None` when it does not decode (corruption).
/// `max_content` bounds the decompressed size (a corrupt frame cannot claim gigabytes).
pub fn decode(first_seq: u64, v: &[u8], max_content: usize) -> Option<Records> {
    let h = header(v)?;
    let content = match v[1] {
        CODEC_ZSTD => zstd::bulk::decompress(&v[HEADER_LEN..], max_content).ok()?,
        _ => v[HEADER_LEN..].to_vec(),
    };
    let mut pos = 0;
    let mut lens = Vec::with_capacity(h.count as usize);
    for _ in 0..h.count {
        lens.push(read_varint(&content, &mut pos)? as usize);
    }
    let body = content[pos..].to_vec();
    let mut ends = Vec::with_capacity(lens.len());
    let mut at = 0usize;
    for (i, len) in lens.iter().enumerate() {
        if i > 0 {
            if body.get(at) != Some(&b',') {
                return None;
            }
            at += 1;
        }
        at = at.checked_add(*len)?;
        ends.push(u32::try_from(at).ok()?);
    }
    if at != body.len() {
        return None;
    }
    Some(Records {
        first_seq,
        first_ts_ms: h.first_ts_ms,
        body,
        ends,
    })
}

/// A zstd compressor at [`ZSTD_LEVEL`], reused across blocks (saves its context allocations).
pub fn compressor() -> io::Result<zstd::bulk::Compressor<'static>> {
    zstd::bulk::Compressor::new(ZSTD_LEVEL)
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(n: u64) -> Records {
        let mut r = Records::default();
        for seq in 10..10 + n {
            r.begin_record(seq, 1000 + seq);
            r.body.extend_from_slice(
                format!(r#"{{"seq":{seq},"v":"{}"}}"#, "x".repeat(seq as usize % 7)).as_bytes(),
            );
            r.end_record();
        }
        r
    }

    #[test]
    fn blocks_round_trip_raw_and_compressed() {
        let b = block(300);
        let mut c = compressor().unwrap();
        for v in [b.encode(None), b.encode(Some(&mut c))] {
            let h = header(&v).unwrap();
            assert_eq!((h.count, h.first_ts_ms), (300, 1010));
            let d = decode(10, &v, 1 << 20).unwrap();
            assert_eq!(d, b);
            assert_eq!(d.last_seq(), 309);
            assert_eq!(&d.body[d.range(1)], br#"{"seq":11,"v":"xxxx"}"#);
            assert_eq!(
                d.joined(0, 1),
                br#"{"seq":10,"v":"xxx"},{"seq":11,"v":"xxxx"}"#
            );
        }
        let small = b.encode(Some(&mut c));
        assert!(small.len() * 5 < b.body.len(), "{} bytes", small.len());
    }

    #[test]
    fn corrupt_values_do_not_decode() {
        let b = block(3);
        let v = b.encode(None);
        assert_eq!(decode(10, &v[..v.len() - 1], 1 << 20), None);
        let mut bad = v.clone();
        bad[0] = 1;
        assert_eq!(header(&bad), None);
        let mut zero = v.clone();
        zero[2..6].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(header(&zero), None);
        let z = b.encode(Some(&mut compressor().unwrap()));
        assert_eq!(decode(10, &z, 4), None, "bounded decompression");
        assert_eq!(decode(10, &[0u8; 64], 1 << 20), None);
    }
}
