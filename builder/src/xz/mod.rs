//! A bounded `.xz` decoder (the XZ Utils container format, `xz-file-format.txt` 1.x, with
//! the LZMA2 filter and the x86 BCJ filter), so the builder can load a bzImage whose
//! payload is xz-compressed, as Debian's kernels are, the way Xen's toolstack
//! (`xg_dom_bzimageloader.c`) and dom0 builder do.
//!
//! What is supported: one or more concatenated streams with stream padding; blocks whose
//! filter chain is LZMA2 alone or x86 BCJ (with optional start offset) then LZMA2; check
//! types none, CRC32 and CRC64, all verified, as are the CRC32s of the stream header,
//! block headers, index and footer, and the index against the blocks. SHA-256 and the
//! reserved check types, and other filters (delta, other BCJs), are refused with an error.
//!
//! Everything is treated as hostile: no input makes this panic, and output never grows
//! past the caller's limit (the limit is checked before memory is reserved, chunk by
//! chunk). The whole output stays in memory and is also the LZMA dictionary.

mod bcj;
mod crc;
mod lzma2;
mod sink;

use alloc::vec::Vec;
use core::fmt;

pub use crc::{crc32, crc64};
use sink::{Sink, SliceSink, VecSink};

/// Stream header magic.
pub const HEADER_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];
/// Stream footer magic.
const FOOTER_MAGIC: [u8; 2] = *b"YZ";
const HEADER_LEN: usize = 12;
const FOOTER_LEN: usize = 12;
const FILTER_X86: u64 = 0x04;
const FILTER_LZMA2: u64 = 0x21;

/// Why `.xz` data was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum XzError {
    /// The data ends before the structure being read does.
    Truncated,
    /// No stream header magic where a stream must start.
    BadMagic,
    /// No `"YZ"` at the end of a stream footer.
    BadFooterMagic,
    /// Reserved bits set in the stream flags.
    BadStreamFlags,
    /// The stream header's CRC32 does not match.
    HeaderCrc,
    /// A block header's CRC32 does not match.
    BlockHeaderCrc,
    /// The index's CRC32 does not match.
    IndexCrc,
    /// The stream footer's CRC32 does not match.
    FooterCrc,
    /// The footer's stream flags differ from the header's.
    FlagsMismatch,
    /// A check type this decoder does not verify (10 is SHA-256; others are reserved).
    UnsupportedCheck {
        /// The check type ID (0..=15).
        id: u8,
    },
    /// A block's CRC32/CRC64 of the decompressed data does not match.
    CheckMismatch,
    /// A malformed block header (reserved bits, sizes, padding, too long).
    BadBlockHeader,
    /// A filter this decoder does not implement (only x86 BCJ and LZMA2 are).
    UnsupportedFilter {
        /// The filter ID.
        id: u64,
    },
    /// A filter chain that is not `[x86 BCJ,] LZMA2`, or malformed filter properties.
    BadFilterProperties,
    /// A malformed variable-length integer.
    BadVli,
    /// Non-zero block, index or stream padding, or stream padding not a multiple of 4.
    BadPadding,
    /// An invalid LZMA2 chunk sequence (control byte, missing reset, bad lc/lp/pb).
    CorruptLzma2,
    /// Corrupt LZMA data (distance outside the window, chunk size mismatch, ...).
    CorruptLzma,
    /// A block's sizes differ from those in its header.
    BlockSizeMismatch,
    /// The index does not describe the blocks that were decoded, or its size does not
    /// match the footer's backward size.
    IndexMismatch,
    /// Data follows the last stream that is neither padding nor another stream.
    TrailingData,
    /// The output would exceed the caller's limit.
    OutputLimit,
    /// Reserving output memory failed.
    OutOfMemory,
}

impl fmt::Display for XzError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use XzError::*;
        match self {
            Truncated => f.write_str("xz data is truncated"),
            BadMagic => f.write_str("no xz stream header magic"),
            BadFooterMagic => f.write_str("no xz stream footer magic"),
            BadStreamFlags => f.write_str("reserved xz stream flags are set"),
            HeaderCrc => f.write_str("xz stream header CRC32 mismatch"),
            BlockHeaderCrc => f.write_str("xz block header CRC32 mismatch"),
            IndexCrc => f.write_str("xz index CRC32 mismatch"),
            FooterCrc => f.write_str("xz stream footer CRC32 mismatch"),
            FlagsMismatch => f.write_str("xz stream footer flags differ from the header's"),
            UnsupportedCheck { id: 10 } => {
                f.write_str("xz check type SHA-256 is not supported (use CRC32 or CRC64)")
            }
            UnsupportedCheck { id } => write!(f, "unsupported xz check type {id}"),
            CheckMismatch => f.write_str("xz block check (CRC) mismatch: data is corrupt"),
            BadBlockHeader => f.write_str("malformed xz block header"),
            UnsupportedFilter { id } => write!(
                f,
                "unsupported xz filter {id:#x} (only x86 BCJ and LZMA2 are supported)"
            ),
            BadFilterProperties => f.write_str("unsupported xz filter chain or properties"),
            BadVli => f.write_str("malformed xz variable-length integer"),
            BadPadding => f.write_str("malformed xz padding"),
            CorruptLzma2 => f.write_str("corrupt LZMA2 chunk sequence"),
            CorruptLzma => f.write_str("corrupt LZMA data"),
            BlockSizeMismatch => f.write_str("xz block sizes differ from its header"),
            IndexMismatch => f.write_str("xz index does not match the blocks"),
            TrailingData => f.write_str("garbage after the last xz stream"),
            OutputLimit => f.write_str("decompressed data exceeds the size limit"),
            OutOfMemory => f.write_str("out of memory for the decompressed data"),
        }
    }
}

/// Decompresses a whole `.xz` file (one or more streams, optionally padded) into a new
/// `Vec` of at most `limit` bytes.
pub fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, XzError> {
    let mut sink = VecSink {
        vec: Vec::new(),
        limit,
    };
    decode_file(input, &mut sink)?;
    Ok(sink.vec)
}

/// Decompresses the first `.xz` stream at the start of `input` into a new `Vec` of at most
/// `limit` bytes, ignoring what follows it (as Linux's boot decompressor does with the
/// size a bzImage appends to its payload). Returns the data and the stream's length.
pub fn decompress_stream(input: &[u8], limit: usize) -> Result<(Vec<u8>, usize), XzError> {
    let mut sink = VecSink {
        vec: Vec::new(),
        limit,
    };
    let used = decode_stream(input, &mut sink)?;
    Ok((sink.vec, used))
}

/// Like [`decompress_stream`], reserving `expected` bytes (capped at `limit`) up front, so
/// a correct size hint means one allocation and no reallocation (which would briefly need
/// the old and the new buffer).
pub fn decompress_stream_expecting(
    input: &[u8],
    expected: usize,
    limit: usize,
) -> Result<(Vec<u8>, usize), XzError> {
    let mut vec = Vec::new();
    vec.try_reserve_exact(expected.min(limit))
        .map_err(|_| XzError::OutOfMemory)?;
    let mut sink = VecSink { vec, limit };
    let used = decode_stream(input, &mut sink)?;
    Ok((sink.vec, used))
}

/// Like [`decompress_stream`], into the caller's buffer (e.g. memory outside a small heap).
/// Returns `(bytes written, stream length)`.
pub fn decompress_stream_into(input: &[u8], out: &mut [u8]) -> Result<(usize, usize), XzError> {
    let mut sink = SliceSink { buf: out, len: 0 };
    let used = decode_stream(input, &mut sink)?;
    Ok((sink.len, used))
}

fn decode_file<S: Sink>(input: &[u8], out: &mut S) -> Result<(), XzError> {
    let mut pos = 0usize;
    loop {
        let rest = input.get(pos..).ok_or(XzError::Truncated)?;
        pos += decode_stream(rest, out)?;
        // Stream padding: zero bytes, a multiple of four, then end or another stream.
        let zeros = input
            .get(pos..)
            .unwrap_or(&[])
            .iter()
            .take_while(|&&b| b == 0)
            .count();
        if zeros % 4 != 0 {
            return Err(XzError::BadPadding);
        }
        pos += zeros;
        if pos == input.len() {
            return Ok(());
        }
        if !input.get(pos..).unwrap_or(&[]).starts_with(&HEADER_MAGIC) {
            return Err(XzError::TrailingData);
        }
    }
}

/// A cursor over the input with bounds-checked reads.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], XzError> {
        let end = self.pos.checked_add(n).ok_or(XzError::Truncated)?;
        let s = self.data.get(self.pos..end).ok_or(XzError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, XzError> {
        Ok(self.take(1)?[0])
    }

    fn u32_le(&mut self) -> Result<u32, XzError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A variable-length integer: up to 9 bytes of 7 bits, least significant first, no
    /// redundant trailing zero byte, value below 2^63.
    fn vli(&mut self) -> Result<u64, XzError> {
        let mut v = 0u64;
        for i in 0..9 {
            let b = self.byte()?;
            v |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(XzError::BadVli);
                }
                return Ok(v);
            }
        }
        Err(XzError::BadVli)
    }

    /// Skips zero padding up to the next multiple of four from `base`.
    fn padding(&mut self, base: usize) -> Result<(), XzError> {
        while !(self.pos - base).is_multiple_of(4) {
            if self.byte()? != 0 {
                return Err(XzError::BadPadding);
            }
        }
        Ok(())
    }
}

/// The integrity check of a stream's blocks.
#[derive(Clone, Copy)]
enum Check {
    None,
    Crc32,
    Crc64,
}

impl Check {
    fn from_flags(flags: [u8; 2]) -> Result<Self, XzError> {
        if flags[0] != 0 || flags[1] & 0xF0 != 0 {
            return Err(XzError::BadStreamFlags);
        }
        match flags[1] {
            0x00 => Ok(Check::None),
            0x01 => Ok(Check::Crc32),
            0x04 => Ok(Check::Crc64),
            id => Err(XzError::UnsupportedCheck { id }),
        }
    }

    fn size(self) -> usize {
        match self {
            Check::None => 0,
            Check::Crc32 => 4,
            Check::Crc64 => 8,
        }
    }

    fn verify(self, data: &[u8], stored: &[u8]) -> Result<(), XzError> {
        let ok = match self {
            Check::None => true,
            Check::Crc32 => crc32(data).to_le_bytes() == stored,
            Check::Crc64 => crc64(data).to_le_bytes() == stored,
        };
        if ok {
            Ok(())
        } else {
            Err(XzError::CheckMismatch)
        }
    }
}

/// What the index must say about the blocks: their count, size sums, and a running hash of
/// the (unpadded size, uncompressed size) records in order, so the two can be compared
/// without storing a list (whose length the input would control).
#[derive(Default, PartialEq, Eq)]
struct IndexSummary {
    count: u64,
    unpadded_sum: u64,
    uncompressed_sum: u64,
    hash: u64,
}

impl IndexSummary {
    fn add(&mut self, unpadded: u64, uncompressed: u64) {
        self.count = self.count.wrapping_add(1);
        self.unpadded_sum = self.unpadded_sum.wrapping_add(unpadded);
        self.uncompressed_sum = self.uncompressed_sum.wrapping_add(uncompressed);
        let mut rec = [0u8; 24];
        rec[..8].copy_from_slice(&self.hash.to_le_bytes());
        rec[8..16].copy_from_slice(&unpadded.to_le_bytes());
        rec[16..].copy_from_slice(&uncompressed.to_le_bytes());
        self.hash = crc64(&rec);
    }
}

/// Decodes one stream at the start of `input`; returns its length.
fn decode_stream<S: Sink>(input: &[u8], out: &mut S) -> Result<usize, XzError> {
    let mut r = Reader {
        data: input,
        pos: 0,
    };
    let header = r.take(HEADER_LEN)?;
    if header[..6] != HEADER_MAGIC {
        return Err(XzError::BadMagic);
    }
    let flags = [header[6], header[7]];
    if crc32(&flags).to_le_bytes() != header[8..12] {
        return Err(XzError::HeaderCrc);
    }
    let check = Check::from_flags(flags)?;

    let mut blocks = IndexSummary::default();
    loop {
        // A zero byte where a block header would start is the index indicator.
        let first = *input.get(r.pos).ok_or(XzError::Truncated)?;
        if first == 0 {
            break;
        }
        let (unpadded, uncompressed) = decode_block(&mut r, out, check)?;
        blocks.add(unpadded, uncompressed);
    }

    // Index: indicator, record count, records, padding, CRC32.
    let index_start = r.pos;
    r.byte()?;
    let count = r.vli()?;
    if count != blocks.count {
        return Err(XzError::IndexMismatch);
    }
    let mut listed = IndexSummary::default();
    for _ in 0..count {
        let unpadded = r.vli()?;
        let uncompressed = r.vli()?;
        listed.add(unpadded, uncompressed);
    }
    r.padding(index_start)?;
    let index_crc = crc32(input.get(index_start..r.pos).ok_or(XzError::Truncated)?);
    if r.u32_le()? != index_crc {
        return Err(XzError::IndexCrc);
    }
    if listed != blocks {
        return Err(XzError::IndexMismatch);
    }
    let index_len = r.pos - index_start;

    // Footer: CRC32 of (backward size, flags), backward size, flags, "YZ".
    let footer = r.take(FOOTER_LEN)?;
    if footer[10..12] != FOOTER_MAGIC {
        return Err(XzError::BadFooterMagic);
    }
    if crc32(&footer[4..10]).to_le_bytes() != footer[..4] {
        return Err(XzError::FooterCrc);
    }
    if footer[8..10] != flags {
        return Err(XzError::FlagsMismatch);
    }
    let backward = u32::from_le_bytes([footer[4], footer[5], footer[6], footer[7]]);
    if (u64::from(backward) + 1) * 4 != index_len as u64 {
        return Err(XzError::IndexMismatch);
    }
    Ok(r.pos)
}

/// The filter chain of a block: LZMA2's dictionary size, and the x86 BCJ start offset if
/// the chain has that filter first.
struct Filters {
    dict_size: u32,
    x86_start: Option<u32>,
}

/// Parses a block header at `r` (whose first byte is non-zero).
fn block_header(r: &mut Reader<'_>) -> Result<(Filters, Option<u64>, Option<u64>), XzError> {
    let start = r.pos;
    let size = (usize::from(r.byte()?) + 1) * 4;
    let all = r.data.get(start..start + size).ok_or(XzError::Truncated)?;
    let (body, crc) = all.split_at(size - 4);
    if crc32(body).to_le_bytes() != crc {
        return Err(XzError::BlockHeaderCrc);
    }
    // Parse only inside the header (minus its CRC).
    let mut h = Reader { data: body, pos: 1 };
    let flags = h.byte().map_err(|_| XzError::BadBlockHeader)?;
    if flags & 0x3C != 0 {
        return Err(XzError::BadBlockHeader);
    }
    let hdr = |e: XzError| {
        if e == XzError::Truncated {
            XzError::BadBlockHeader
        } else {
            e
        }
    };
    let compressed = if flags & 0x40 != 0 {
        Some(h.vli().map_err(hdr)?)
    } else {
        None
    };
    let uncompressed = if flags & 0x80 != 0 {
        Some(h.vli().map_err(hdr)?)
    } else {
        None
    };
    if compressed == Some(0) {
        return Err(XzError::BadBlockHeader);
    }
    let nfilters = usize::from(flags & 0x03) + 1;
    let mut filters = Filters {
        dict_size: 0,
        x86_start: None,
    };
    for i in 0..nfilters {
        let id = h.vli().map_err(hdr)?;
        let props_len = h.vli().map_err(hdr)?;
        let props_len = usize::try_from(props_len).map_err(|_| XzError::BadBlockHeader)?;
        let props = h.take(props_len).map_err(hdr)?;
        let last = i + 1 == nfilters;
        match id {
            FILTER_LZMA2 if last => {
                let &[p] = props else {
                    return Err(XzError::BadFilterProperties);
                };
                filters.dict_size = lzma2::dict_size(p)?;
            }
            FILTER_X86 if !last && i == 0 => {
                filters.x86_start = Some(match *props {
                    [] => 0,
                    [a, b, c, d] => u32::from_le_bytes([a, b, c, d]),
                    _ => return Err(XzError::BadFilterProperties),
                });
            }
            FILTER_LZMA2 | FILTER_X86 => return Err(XzError::BadFilterProperties),
            id => return Err(XzError::UnsupportedFilter { id }),
        }
    }
    if body[h.pos..].iter().any(|&b| b != 0) {
        return Err(XzError::BadBlockHeader);
    }
    r.pos = start + size;
    Ok((filters, compressed, uncompressed))
}

/// Decodes one block; returns its (unpadded size, uncompressed size) for the index.
fn decode_block<S: Sink>(
    r: &mut Reader<'_>,
    out: &mut S,
    check: Check,
) -> Result<(u64, u64), XzError> {
    let start = r.pos;
    let (filters, compressed, uncompressed) = block_header(r)?;
    let header_len = r.pos - start;

    let out_start = out.len();
    let rest = r.data.get(r.pos..).ok_or(XzError::Truncated)?;
    // With a declared compressed size, LZMA2 must not read past it.
    let rest = match compressed {
        Some(c) => {
            let c = usize::try_from(c).map_err(|_| XzError::Truncated)?;
            rest.get(..c).ok_or(XzError::Truncated)?
        }
        None => rest,
    };
    let used = lzma2::decode(rest, out, filters.dict_size)?;
    let produced = out.len() - out_start;
    if compressed.is_some_and(|c| c != used as u64)
        || uncompressed.is_some_and(|u| u != produced as u64)
    {
        return Err(XzError::BlockSizeMismatch);
    }
    r.pos += used;
    r.padding(start)?;

    let data = out.data_mut().get_mut(out_start..).unwrap_or(&mut []);
    if let Some(x86_start) = filters.x86_start {
        bcj::x86_decode(data, x86_start);
    }
    let stored = r.take(check.size())?;
    check.verify(data, stored)?;

    let unpadded = (header_len + used + check.size()) as u64;
    Ok((unpadded, produced as u64))
}
