//! Byte-level pieces of the binary trace encoding: LEB128 varints, zigzag deltas,
//! length-prefixed strings, and a bounds-checked cursor that never panics on hostile input
//! (every failure is a short reason the caller turns into an error with the file and offset).

/// Appends `value` as an LEB128 varint (1 to 10 bytes).
pub(crate) fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Appends a signed value zigzag-encoded (small magnitudes stay small).
pub(crate) fn put_signed(buf: &mut Vec<u8>, value: i64) {
    put_varint(buf, ((value << 1) ^ (value >> 63)) as u64);
}

/// Appends a string as its byte length and its UTF-8 bytes.
pub(crate) fn put_str(buf: &mut Vec<u8>, text: &str) {
    put_varint(buf, text.len() as u64);
    buf.extend_from_slice(text.as_bytes());
}

/// Reads values from a byte slice; each method fails with a reason instead of panicking.
#[derive(Debug)]
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    /// Bytes consumed so far.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Whether everything was consumed.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, &'static str> {
        let byte = *self.bytes.get(self.pos).ok_or("record cut short")?;
        self.pos += 1;
        Ok(byte)
    }

    pub(crate) fn varint(&mut self) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err("varint overflows 64 bits");
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes")
    }

    pub(crate) fn varint_u32(&mut self) -> Result<u32, &'static str> {
        u32::try_from(self.varint()?).map_err(|_| "value does not fit 32 bits")
    }

    pub(crate) fn signed(&mut self) -> Result<i64, &'static str> {
        let raw = self.varint()?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Result<&'a [u8], &'static str> {
        let end = self.pos.checked_add(len).ok_or("length overflows")?;
        let slice = self.bytes.get(self.pos..end).ok_or("record cut short")?;
        self.pos = end;
        Ok(slice)
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, &'static str> {
        let len = usize::try_from(self.varint()?).map_err(|_| "length overflows")?;
        std::str::from_utf8(self.bytes(len)?).map_err(|_| "string is not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_zigzag_round_trip_at_the_edges() {
        let values = [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX];
        let signed = [0i64, -1, 1, -64, 64, i64::MIN, i64::MAX];
        let mut buf = Vec::new();
        values.iter().for_each(|&v| put_varint(&mut buf, v));
        signed.iter().for_each(|&v| put_signed(&mut buf, v));
        put_str(&mut buf, "usr/bin/python3.11");
        let mut cur = Cursor::new(&buf);
        for &v in &values {
            assert_eq!(cur.varint(), Ok(v));
        }
        for &v in &signed {
            assert_eq!(cur.signed(), Ok(v));
        }
        assert_eq!(cur.str(), Ok("usr/bin/python3.11"));
        assert!(cur.is_empty());
    }

    #[test]
    fn hostile_bytes_are_reasons_not_panics() {
        assert!(Cursor::new(&[0xff; 11]).varint().is_err());
        assert!(
            Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .varint()
                .is_err()
        );
        assert!(Cursor::new(&[0x80]).varint().is_err());
        assert!(Cursor::new(&[0x05, b'a']).str().is_err());
        assert!(Cursor::new(&[0x02, 0xff, 0xfe]).str().is_err());
        let mut huge = Vec::new();
        put_varint(&mut huge, u64::MAX);
        assert!(Cursor::new(&huge).str().is_err());
    }
}
