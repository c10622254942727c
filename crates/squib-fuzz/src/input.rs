//! [`Input`]: the fuzzer's bytes read front to back as the numbers and slices of a scenario.
//!
//! Reading past the end yields zeros and empty slices, so every byte string decodes to some
//! scenario and a scenario ends when its bytes do.

/// A cursor over the fuzzer's bytes.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Read `data` from its start.
    #[must_use]
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether every byte has been read.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next bit of a byte: its lowest bit.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    fn le<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let taken = self.bytes(N);
        out[..taken.len()].copy_from_slice(taken);
        out
    }

    /// The next two bytes, little endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.le())
    }

    /// The next four bytes, little endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.le())
    }

    /// The next eight bytes, little endian.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.le())
    }

    /// The next `max` bytes, or fewer at the end.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(max.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A length byte, then that many bytes (at most `cap`).
    pub fn prefixed(&mut self, cap: usize) -> &'a [u8] {
        let len = usize::from(self.u8()).min(cap);
        self.bytes(len)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_as_zeros() {
        let mut input = Input::new(&[1, 2, 3]);
        assert_eq!(input.u16(), 0x0201);
        assert_eq!(input.u32(), 3);
        assert!(input.is_empty());
        assert_eq!(input.u64(), 0);
        assert!(input.bytes(4).is_empty());
    }

    #[test]
    fn prefixed_caps_the_length() {
        let mut input = Input::new(&[200, 9, 8, 7]);
        assert_eq!(input.prefixed(2), &[9, 8]);
        assert_eq!(input.rest(), &[7]);
    }
}
