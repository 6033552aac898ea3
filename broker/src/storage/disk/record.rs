//! The on-disk layout of a segment and its records (`spec/storage.md` has the same tables).
//!
//! # Segment file `{base_offset:020}.log`
//! | bytes | field       | value                         |
//! |-------|-------------|-------------------------------|
//! | 0..8  | magic       | `4D 51 53 45 47 00 00 01` ("MQSEG", 0, 0, version 1) |
//! | 8..16 | base_offset | u64, offset of the first record |
//! | 16..  | records     | back to back, then zeros to the pre-sized end |
//!
//! # Record (big-endian)
//! | bytes        | field        | notes                                        |
//! |--------------|--------------|----------------------------------------------|
//! | 0..4         | length       | u32, bytes after this field (26 + key + value); 0 marks the end |
//! | 4..8         | crc32c       | CRC-32C (Castagnoli) of bytes 8..end of record |
//! | 8..16        | offset       | u64                                          |
//! | 16..24       | timestamp_ms | u64, append time, ms since the Unix epoch     |
//! | 24..26       | key_len      | u16, 0 = no key                               |
//! | 26..26+k     | key          |                                              |
//! | ..+4         | value_len    | u32                                          |
//! | ..           | value        |                                              |

use std::ops::Range;

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"MQSEG\x00\x00\x01";
/// Bytes of the segment header: magic and base offset.
pub const SEGMENT_HEADER_BYTES: usize = 16;
/// Bytes of a record without its key and value.
pub const RECORD_OVERHEAD_BYTES: usize = 4 + 4 + 8 + 8 + 2 + 4;
/// Smallest valid `length` field: a record with empty key and value.
const LENGTH_MIN: u32 = (RECORD_OVERHEAD_BYTES - 4) as u32;

/// Bytes a record with these key and value lengths takes in a segment.
pub fn encoded_len(key_len: usize, value_len: usize) -> usize {
    RECORD_OVERHEAD_BYTES + key_len + value_len
}

/// Writes the segment header into the first `SEGMENT_HEADER_BYTES` of `buf`.
pub fn write_segment_header(buf: &mut [u8], base_offset: u64) {
    buf[..8].copy_from_slice(&SEGMENT_MAGIC);
    buf[8..16].copy_from_slice(&base_offset.to_be_bytes());
}

/// The base offset recorded in a segment header, if the magic is right.
pub fn read_segment_header(buf: &[u8]) -> Option<u64> {
    if buf.len() < SEGMENT_HEADER_BYTES || buf[..8] != SEGMENT_MAGIC {
        return None;
    }
    Some(u64::from_be_bytes(buf[8..16].try_into().expect("8 bytes")))
}

/// Encodes one record into `buf`, which must be exactly `encoded_len` long.
pub fn encode(buf: &mut [u8], offset: u64, timestamp_ms: u64, key: &[u8], value: &[u8]) {
    assert_eq!(buf.len(), encoded_len(key.len(), value.len()), "record buffer has the wrong size");
    let length = (buf.len() - 4) as u32;
    buf[0..4].copy_from_slice(&length.to_be_bytes());
    buf[8..16].copy_from_slice(&offset.to_be_bytes());
    buf[16..24].copy_from_slice(&timestamp_ms.to_be_bytes());
    buf[24..26].copy_from_slice(&(key.len() as u16).to_be_bytes());
    let key_end = 26 + key.len();
    buf[26..key_end].copy_from_slice(key);
    buf[key_end..key_end + 4].copy_from_slice(&(value.len() as u32).to_be_bytes());
    buf[key_end + 4..].copy_from_slice(value);
    let crc = crc32c::crc32c(&buf[8..]);
    buf[4..8].copy_from_slice(&crc.to_be_bytes());
}

/// A record found at a position of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its offset.
    pub offset: u64,
    /// Its timestamp.
    pub timestamp_ms: u64,
    /// Where its key is in the segment (empty for no key).
    pub key: Range<usize>,
    /// Where its value is in the segment.
    pub value: Range<usize>,
    /// Position of the next record.
    pub next: usize,
}

/// What is at a position of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// A valid record.
    Record(Found),
    /// A zero length (the pre-sized, never written tail) or the end of the bytes.
    End,
    /// A record whose bytes run past the end: a torn write.
    Torn,
    /// A length or CRC that cannot be right.
    Corrupt(&'static str),
}

/// Decodes the record at `pos`, verifying its length and CRC.
pub fn decode_at(buf: &[u8], pos: usize) -> Scan {
    let Some(head) = buf.get(pos..pos + 4) else { return Scan::End };
    let length = u32::from_be_bytes(head.try_into().expect("4 bytes"));
    if length == 0 {
        return Scan::End;
    }
    if length < LENGTH_MIN {
        return Scan::Corrupt("length below the smallest record");
    }
    let end = pos + 4 + length as usize;
    let Some(body) = buf.get(pos + 4..end) else { return Scan::Torn };
    let crc = u32::from_be_bytes(body[0..4].try_into().expect("4 bytes"));
    if crc32c::crc32c(&body[4..]) != crc {
        return Scan::Corrupt("CRC mismatch");
    }
    let offset = u64::from_be_bytes(body[4..12].try_into().expect("8 bytes"));
    let timestamp_ms = u64::from_be_bytes(body[12..20].try_into().expect("8 bytes"));
    let key_len = u16::from_be_bytes(body[20..22].try_into().expect("2 bytes")) as usize;
    let key_start = pos + 4 + 22;
    let Some(value_len_bytes) = buf.get(key_start + key_len..key_start + key_len + 4) else {
        return Scan::Corrupt("key runs past the record");
    };
    let value_len = u32::from_be_bytes(value_len_bytes.try_into().expect("4 bytes")) as usize;
    let value_start = key_start + key_len + 4;
    if value_start + value_len != end {
        return Scan::Corrupt("key and value lengths disagree with the record length");
    }
    Scan::Record(Found {
        offset,
        timestamp_ms,
        key: key_start..key_start + key_len,
        value: value_start..end,
        next: end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(offset: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut buf = vec![0; encoded_len(key.len(), value.len())];
        encode(&mut buf, offset, 99, key, value);
        buf
    }

    #[test]
    fn a_record_decodes_to_what_was_encoded() {
        let buf = one(7, b"gpu-1", b"hello");
        let Scan::Record(f) = decode_at(&buf, 0) else { panic!() };
        assert_eq!((f.offset, f.timestamp_ms, f.next), (7, 99, buf.len()));
        assert_eq!(&buf[f.key], b"gpu-1");
        assert_eq!(&buf[f.value], b"hello");
    }

    #[test]
    fn every_truncation_is_torn_or_end_and_every_bit_flip_is_caught() {
        let buf = one(7, b"k", b"value bytes");
        for cut in 0..buf.len() {
            let scan = decode_at(&buf[..cut], 0);
            assert!(matches!(scan, Scan::End | Scan::Torn), "cut {cut}: {scan:?}");
        }
        for bit in 0..buf.len() * 8 {
            let mut flipped = buf.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(!matches!(decode_at(&flipped, 0), Scan::Record(_)), "bit {bit} not caught");
        }
    }

    #[test]
    fn zeros_mark_the_end_and_headers_round_trip() {
        assert_eq!(decode_at(&[0; 64], 0), Scan::End);
        let mut h = [0u8; SEGMENT_HEADER_BYTES];
        write_segment_header(&mut h, 42);
        assert_eq!(read_segment_header(&h), Some(42));
        h[0] = b'X';
        assert_eq!(read_segment_header(&h), None);
    }
}
