//! The partitioning hash: which partition a keyed record goes to.
//!
//! The broker, not the client, picks the partition: `fnv1a_32(key) % partitions`. FNV-1a is
//! used because it is a few lines in any language and stable across versions and platforms;
//! `spec/wire.md` ("Partitioning") gives its constants and test values.

const FNV_OFFSET_BASIS: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// 32-bit FNV-1a of `bytes`.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut hash = FNV_OFFSET_BASIS;
    for &b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// The partition of a record with `key` in a topic of `partitions` partitions.
///
/// # Panics
/// If `partitions` is 0: a topic always has at least one partition.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    fnv1a_32(key) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_published_test_values() {
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn partition_is_hash_modulo_count() {
        let key = b"GPU-5fd4f087-86f3-7a43-b711-4771313afc50";
        assert_eq!(partition_for_key(key, 16), fnv1a_32(key) % 16);
        assert_eq!(partition_for_key(key, 1), 0);
    }
}
