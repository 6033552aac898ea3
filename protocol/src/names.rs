//! What topic names, group names, keys and tokens may contain.
//!
//! Names become directory and file names on the broker's disk, and every field must be
//! printable in the text dialect, so both are restricted to a small safe alphabet. The same
//! rules hold in both dialects; `spec/wire.md` ("Names and keys") states them.

use crate::limits::{KEY_BYTES_MAX, NAME_BYTES_MAX, TOKEN_BYTES_MAX};
use crate::ProtoError;

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

/// A printable ASCII byte other than space: what keys and tokens are made of.
fn is_token_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// Checks a topic or group name: 1 to 200 bytes of `[A-Za-z0-9._-]`, not `.` or `..`.
///
/// # Errors
/// [`ProtoError::BadArg`] naming `what` and the rule broken.
pub fn validate_name(what: &str, name: &str) -> Result<(), ProtoError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > NAME_BYTES_MAX {
        return Err(ProtoError::BadArg(format!(
            "{what} must be 1 to {NAME_BYTES_MAX} bytes, got {}",
            bytes.len()
        )));
    }
    if !bytes.iter().all(|&b| is_name_byte(b)) || name == "." || name == ".." {
        return Err(ProtoError::BadArg(format!(
            "{what} {name:?} has characters outside [A-Za-z0-9._-]"
        )));
    }
    Ok(())
}

/// Checks a record key: 1 to 255 bytes, each printable ASCII other than space (0x21..=0x7E).
///
/// # Errors
/// [`ProtoError::BadArg`] with the rule broken.
pub fn validate_key(key: &[u8]) -> Result<(), ProtoError> {
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        return Err(ProtoError::BadArg(format!(
            "key must be 1 to {KEY_BYTES_MAX} bytes, got {}",
            key.len()
        )));
    }
    if !key.iter().fold(true, |ok, &b| ok & is_token_byte(b)) {
        return Err(ProtoError::BadArg("key has bytes outside printable ASCII 0x21..0x7e".into()));
    }
    Ok(())
}

/// Checks an `AUTH` token: 1 to 256 bytes of printable ASCII other than space.
///
/// # Errors
/// [`ProtoError::BadArg`] with the rule broken.
pub fn validate_token(token: &str) -> Result<(), ProtoError> {
    let bytes = token.as_bytes();
    if bytes.is_empty()
        || bytes.len() > TOKEN_BYTES_MAX
        || !bytes.iter().fold(true, |ok, &b| ok & is_token_byte(b))
    {
        return Err(ProtoError::BadArg(format!(
            "token must be 1 to {TOKEN_BYTES_MAX} bytes of printable ASCII"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_safe_alphabet_only() {
        assert!(validate_name("topic", "telemetry").is_ok());
        assert!(validate_name("topic", "telemetry.dlq").is_ok());
        assert!(validate_name("topic", "a_b-C.9").is_ok());
        for bad in ["", ".", "..", "a/b", "../x", "a b", "é", "a\0"] {
            assert!(validate_name("topic", bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_name("topic", &"x".repeat(NAME_BYTES_MAX)).is_ok());
        assert!(validate_name("topic", &"x".repeat(NAME_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn keys_are_printable_ascii_without_space() {
        assert!(validate_key(b"GPU-5fd4f087-86f3-7a43-b711-4771313afc50").is_ok());
        assert!(validate_key(b"a/b:c").is_ok());
        assert!(validate_key(b"").is_err());
        assert!(validate_key(b"a b").is_err());
        assert!(validate_key(&[0xff]).is_err());
        assert!(validate_key(&[b'k'; KEY_BYTES_MAX + 1]).is_err());
    }
}
