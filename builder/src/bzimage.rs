//! Linux bzImage unwrapping (Linux boot protocol, `Documentation/arch/x86/boot.rst`; Xen
//! `tools/libs/guest/xg_dom_bzimageloader.c`): find the protected-mode payload, which for a
//! PV boot is the (normally compressed) `vmlinux` ELF.
//!
//! An uncompressed ELF payload is used directly (borrowed, [`kernel_elf`]). An xz payload
//! (Debian's kernels) is decompressed into an owned buffer by [`unpack_kernel`], bounded by
//! the size Linux's build appends to the payload plus [`DECOMPRESS_SLACK`], and by
//! [`MAX_DECOMPRESSED_KERNEL`]. Other compressions are reported as
//! [`BuildError::CompressedPayload`] naming the compression, so the caller can decompress
//! the kernel first.

use alloc::borrow::Cow;
use core::fmt;

use crate::bytes::{slice, u16_at, u32_at, u8_at};
use crate::elf::ELF_MAGIC;
use crate::{xz, BuildError};

/// Hard cap on a decompressed kernel, whatever its bzImage claims.
pub const MAX_DECOMPRESSED_KERNEL: usize = 512 << 20;
/// Allowed excess of the decompressed size over the bzImage's size hint.
pub const DECOMPRESS_SLACK: usize = 1 << 20;

/// Offset of the `"HdrS"` setup-header magic.
const HDRS_OFFSET: usize = 0x202;
/// Offset of the boot protocol version (u16).
const VERSION_OFFSET: usize = 0x206;
/// Offset of `setup_sects` (u8).
const SETUP_SECTS_OFFSET: usize = 0x1f1;
/// Offset of `payload_offset` (u32, protocol >= 2.08).
const PAYLOAD_OFFSET_OFFSET: usize = 0x248;
/// Offset of `payload_length` (u32, protocol >= 2.08).
const PAYLOAD_LENGTH_OFFSET: usize = 0x24c;
/// First boot protocol version with the payload fields.
const MIN_VERSION: u16 = 0x0208;

/// Compression of a bzImage payload, recognised by its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip (`1f 8b`).
    Gzip,
    /// bzip2 (`"BZh"`).
    Bzip2,
    /// xz (`fd "7zXZ" 00`); Debian's kernels use this.
    Xz,
    /// legacy lzma (`5d 00 00`).
    Lzma,
    /// lzop (`89 "LZO" 00 0d 0a 1a 0a`).
    Lzo,
    /// lz4 legacy frame (`02 21 4c 18`).
    Lz4,
    /// zstd (`28 b5 2f fd`).
    Zstd,
    /// Not an ELF and no known compression magic.
    Unknown,
}

impl Compression {
    /// Recognises the compression of `payload` from its first bytes.
    pub fn detect(payload: &[u8]) -> Self {
        const MAGICS: &[(&[u8], Compression)] = &[
            (&[0x1f, 0x8b], Compression::Gzip),
            (b"BZh", Compression::Bzip2),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Compression::Xz),
            (&[0x5d, 0x00, 0x00], Compression::Lzma),
            (
                &[0x89, b'L', b'Z', b'O', 0x00, 0x0d, 0x0a, 0x1a, 0x0a],
                Compression::Lzo,
            ),
            (&[0x02, 0x21, 0x4c, 0x18], Compression::Lz4),
            (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
        ];
        MAGICS
            .iter()
            .find(|(magic, _)| payload.starts_with(magic))
            .map_or(Compression::Unknown, |&(_, kind)| kind)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Lzo => "lzo",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Unknown => "unknown",
        })
    }
}

/// A bzImage's setup header facts and its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BzImage<'a> {
    /// Boot protocol version (e.g. 0x020f).
    pub version: u16,
    /// The payload (`payload_length` bytes).
    pub payload: &'a [u8],
}

impl<'a> BzImage<'a> {
    /// Parses `data` as a bzImage. `Ok(None)` if it has no `"HdrS"` header at all.
    pub fn parse(data: &'a [u8]) -> Result<Option<Self>, BuildError> {
        if data.get(HDRS_OFFSET..HDRS_OFFSET + 4) != Some(b"HdrS".as_slice()) {
            return Ok(None);
        }
        let version = u16_at(data, VERSION_OFFSET).ok_or(BuildError::BzImagePayloadOutOfFile)?;
        if version < MIN_VERSION {
            return Err(BuildError::BzImageTooOld { version });
        }
        let field32 = |off| u32_at(data, off).ok_or(BuildError::BzImagePayloadOutOfFile);
        let setup_sects =
            u8_at(data, SETUP_SECTS_OFFSET).ok_or(BuildError::BzImagePayloadOutOfFile)?;
        // Xen's loader: payload at (setup_sects + 1) * 512 + payload_offset.
        let start = (u64::from(setup_sects) + 1) * 512 + u64::from(field32(PAYLOAD_OFFSET_OFFSET)?);
        let len = u64::from(field32(PAYLOAD_LENGTH_OFFSET)?);
        let payload = slice(data, start, len).ok_or(BuildError::BzImagePayloadOutOfFile)?;
        Ok(Some(BzImage { version, payload }))
    }

    /// The payload's compression, or `None` if it is an uncompressed ELF.
    pub fn compression(&self) -> Option<Compression> {
        if self.payload.starts_with(&ELF_MAGIC) {
            None
        } else {
            Some(Compression::detect(self.payload))
        }
    }

    /// Size of the decompressed payload as recorded by Linux's build (`size_append`: the
    /// last 4 bytes of the payload, little-endian). Only meaningful when compressed.
    pub fn decompressed_len_hint(&self) -> Option<u32> {
        let off = self.payload.len().checked_sub(4)?;
        u32_at(self.payload, off)
    }
}

/// The ELF to load from a kernel file: the file itself if it is an ELF, or the payload of a
/// bzImage if that is an uncompressed ELF.
pub fn kernel_elf(data: &[u8]) -> Result<&[u8], BuildError> {
    if data.starts_with(&ELF_MAGIC) {
        return Ok(data);
    }
    match BzImage::parse(data)? {
        None => Err(BuildError::NotElf),
        Some(bz) => match bz.compression() {
            None => Ok(bz.payload),
            Some(kind) => Err(BuildError::CompressedPayload { kind }),
        },
    }
}

/// The ELF to load from a kernel file, decompressing an xz-compressed bzImage payload:
/// borrowed for an ELF file or an uncompressed payload, owned when decompressed.
///
/// The output may not exceed the payload's decompressed-size hint plus
/// [`DECOMPRESS_SLACK`], nor [`MAX_DECOMPRESSED_KERNEL`]; the decompressed data must be an
/// ELF file. Other compressions give [`BuildError::CompressedPayload`].
pub fn unpack_kernel(data: &[u8]) -> Result<Cow<'_, [u8]>, BuildError> {
    if data.starts_with(&ELF_MAGIC) {
        return Ok(Cow::Borrowed(data));
    }
    let bz = BzImage::parse(data)?.ok_or(BuildError::NotElf)?;
    match bz.compression() {
        None => Ok(Cow::Borrowed(bz.payload)),
        Some(Compression::Xz) => {
            let hint = bz
                .decompressed_len_hint()
                .and_then(|h| usize::try_from(h).ok())
                .unwrap_or(0);
            let limit = hint
                .saturating_add(DECOMPRESS_SLACK)
                .min(MAX_DECOMPRESSED_KERNEL);
            // The payload is one xz stream followed by the 4-byte size hint, which the
            // stream decoder leaves alone (as Linux's own decompressor does).
            let (elf, _) =
                xz::decompress_stream_expecting(bz.payload, hint, limit).map_err(BuildError::Xz)?;
            if !elf.starts_with(&ELF_MAGIC) {
                return Err(BuildError::NotElf);
            }
            Ok(Cow::Owned(elf))
        }
        Some(kind) => Err(BuildError::CompressedPayload { kind }),
    }
}
