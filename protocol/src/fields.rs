//! Field encodings of binary frame bodies: big-endian integers, `str16`, `bytes16`, `bytes32`.
//!
//! [`Reader`] walks a body held in [`Bytes`] and hands byte fields out as slices of it, so a
//! payload is never copied. Running out of body is [`ProtoError::Malformed`] naming the field:
//! the frame as a whole has already been received, so a short body is a bad body, not
//! "incomplete".

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::ProtoError;

/// A cursor over one frame body.
#[derive(Debug)]
pub(crate) struct Reader {
    body: Bytes,
}

impl Reader {
    pub(crate) fn new(body: Bytes) -> Reader {
        Reader { body }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.body.len()
    }

    fn need(&self, bytes: usize, field: &str) -> Result<(), ProtoError> {
        if self.body.len() < bytes {
            return Err(ProtoError::Malformed(format!(
                "body ends inside field {field} (needs {bytes} bytes, {} left)",
                self.body.len()
            )));
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, field: &str) -> Result<u8, ProtoError> {
        self.need(1, field)?;
        Ok(self.body.get_u8())
    }

    pub(crate) fn u16(&mut self, field: &str) -> Result<u16, ProtoError> {
        self.need(2, field)?;
        Ok(self.body.get_u16())
    }

    pub(crate) fn u32(&mut self, field: &str) -> Result<u32, ProtoError> {
        self.need(4, field)?;
        Ok(self.body.get_u32())
    }

    pub(crate) fn u64(&mut self, field: &str) -> Result<u64, ProtoError> {
        self.need(8, field)?;
        Ok(self.body.get_u64())
    }

    /// `n` raw bytes, as a zero-copy slice of the body.
    pub(crate) fn take(&mut self, n: usize, field: &str) -> Result<Bytes, ProtoError> {
        self.need(n, field)?;
        Ok(self.body.split_to(n))
    }

    /// `bytes16`: a u16 length, then that many bytes.
    pub(crate) fn bytes16(&mut self, field: &str) -> Result<Bytes, ProtoError> {
        let len = usize::from(self.u16(field)?);
        self.take(len, field)
    }

    /// `bytes32`: a u32 length, then that many bytes.
    pub(crate) fn bytes32(&mut self, field: &str) -> Result<Bytes, ProtoError> {
        let len = self.u32(field)? as usize;
        self.take(len, field)
    }

    /// `str16`: a u16 length, then that many bytes of UTF-8.
    pub(crate) fn str16(&mut self, field: &str) -> Result<String, ProtoError> {
        let bytes = self.bytes16(field)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| ProtoError::Malformed(format!("field {field} is not UTF-8")))
    }

    /// A u32 element count, checked against the bytes left so that a hostile count cannot make
    /// the caller reserve more than the body could hold.
    pub(crate) fn count(
        &mut self,
        element_bytes_min: usize,
        field: &str,
    ) -> Result<usize, ProtoError> {
        let count = self.u32(field)? as usize;
        let fits = self.remaining() / element_bytes_min;
        if count > fits {
            return Err(ProtoError::Malformed(format!(
                "{field} {count} cannot fit in the {} bytes left",
                self.remaining()
            )));
        }
        Ok(count)
    }

    /// The rest of the body, whatever it holds.
    pub(crate) fn rest(&mut self) -> Bytes {
        self.body.split_off(0)
    }

    /// Fails unless the body has been read to its end.
    pub(crate) fn finish(&self) -> Result<(), ProtoError> {
        if !self.body.is_empty() {
            return Err(ProtoError::Malformed(format!(
                "{} trailing bytes after the last field",
                self.body.len()
            )));
        }
        Ok(())
    }
}

/// Appends a `str16`/`bytes16`. Callers validate lengths first; a longer field is a bug.
pub(crate) fn put_bytes16(out: &mut BytesMut, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("bytes16 field longer than 65535 bytes");
    out.put_u16(len);
    out.put_slice(bytes);
}

/// Appends a `bytes32`.
pub(crate) fn put_bytes32(out: &mut BytesMut, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("bytes32 field longer than 4 GiB");
    out.put_u32(len);
    out.put_slice(bytes);
}
