//! Where decompressed bytes go: a growable `Vec` bounded by a byte limit, or a caller's
//! fixed buffer. The decoder reserves room for a whole chunk (at most 2 MiB) before
//! writing it, so the limit is checked once per chunk and the per-byte paths only append.

use alloc::vec::Vec;

use super::XzError;

/// The output (and LZMA dictionary) of the decoder.
pub trait Sink {
    /// Bytes written so far.
    fn len(&self) -> usize;
    /// Everything written so far.
    fn data(&self) -> &[u8];
    /// Everything written so far, for in-place filters (BCJ).
    fn data_mut(&mut self) -> &mut [u8];
    /// Makes room for `additional` more bytes, or fails if that would pass the limit.
    fn reserve(&mut self, additional: usize) -> Result<(), XzError>;
    /// Appends one byte (within a prior `reserve`; bytes past it are dropped).
    fn push(&mut self, b: u8);
    /// Appends `data` (within a prior `reserve`).
    fn extend(&mut self, data: &[u8]);
    /// Appends `len` bytes copied from `back` bytes before the end (`1 <= back <= len()`),
    /// overlapping copies repeating the pattern, as LZ77 matches do.
    fn repeat(&mut self, back: usize, len: usize);

    /// The last byte written (0 if none).
    #[inline(always)]
    fn last(&self) -> u8 {
        self.data().last().copied().unwrap_or(0)
    }

    /// The byte `dist + 1` bytes before the end, if there is one.
    #[inline(always)]
    fn back(&self, dist: usize) -> Option<u8> {
        let d = self.data();
        let idx = d.len().checked_sub(dist.checked_add(1)?)?;
        d.get(idx).copied()
    }
}

/// A `Vec` that may grow up to `limit` bytes.
pub struct VecSink {
    pub vec: Vec<u8>,
    pub limit: usize,
}

impl Sink for VecSink {
    fn len(&self) -> usize {
        self.vec.len()
    }

    fn data(&self) -> &[u8] {
        &self.vec
    }

    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.vec
    }

    fn reserve(&mut self, additional: usize) -> Result<(), XzError> {
        let needed = self
            .vec
            .len()
            .checked_add(additional)
            .filter(|&n| n <= self.limit)
            .ok_or(XzError::OutputLimit)?;
        if needed > self.vec.capacity() {
            // Grow geometrically (amortised O(1) per byte), but never past the limit.
            let target = needed
                .max(self.vec.capacity().saturating_mul(2))
                .min(self.limit);
            self.vec
                .try_reserve_exact(target - self.vec.len())
                .map_err(|_| XzError::OutOfMemory)?;
        }
        Ok(())
    }

    #[inline(always)]
    fn push(&mut self, b: u8) {
        self.vec.push(b);
    }

    fn extend(&mut self, data: &[u8]) {
        self.vec.extend_from_slice(data);
    }

    #[inline(always)]
    fn repeat(&mut self, back: usize, len: usize) {
        let Some(start) = self.vec.len().checked_sub(back) else {
            return;
        };
        if back >= len {
            self.vec.extend_from_within(start..start + len);
        } else {
            for i in start..start + len {
                let b = self.vec.get(i).copied().unwrap_or(0);
                self.vec.push(b);
            }
        }
    }
}

/// A caller's buffer, filled from the start.
pub struct SliceSink<'a> {
    pub buf: &'a mut [u8],
    pub len: usize,
}

impl Sink for SliceSink<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn data(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    fn data_mut(&mut self) -> &mut [u8] {
        self.buf.get_mut(..self.len).unwrap_or(&mut [])
    }

    fn reserve(&mut self, additional: usize) -> Result<(), XzError> {
        match self.len.checked_add(additional) {
            Some(n) if n <= self.buf.len() => Ok(()),
            _ => Err(XzError::OutputLimit),
        }
    }

    #[inline(always)]
    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    fn extend(&mut self, data: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.len..self.len + data.len()) {
            dst.copy_from_slice(data);
            self.len += data.len();
        }
    }

    #[inline(always)]
    fn repeat(&mut self, back: usize, len: usize) {
        let Some(start) = self.len.checked_sub(back) else {
            return;
        };
        if back >= len && self.len + len <= self.buf.len() {
            self.buf.copy_within(start..start + len, self.len);
            self.len += len;
        } else {
            for i in start..start + len {
                let b = self.buf.get(i).copied().unwrap_or(0);
                self.push(b);
            }
        }
    }
}
