//! Bounds-checked little-endian readers over untrusted byte slices.
//!
//! Every accessor returns `None` instead of panicking when the requested range does not fit
//! (including when computing its end overflows).

/// `data[off .. off + len]`, with `u64` inputs as found in ELF headers.
pub(crate) fn slice(data: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(off).ok()?;
    let len = usize::try_from(len).ok()?;
    let end = start.checked_add(len)?;
    data.get(start..end)
}

/// `N` bytes at `off`.
pub(crate) fn array<const N: usize>(data: &[u8], off: usize) -> Option<[u8; N]> {
    let end = off.checked_add(N)?;
    data.get(off..end)?.try_into().ok()
}

pub(crate) fn u8_at(data: &[u8], off: usize) -> Option<u8> {
    data.get(off).copied()
}

pub(crate) fn u16_at(data: &[u8], off: usize) -> Option<u16> {
    array(data, off).map(u16::from_le_bytes)
}

pub(crate) fn u32_at(data: &[u8], off: usize) -> Option<u32> {
    array(data, off).map(u32::from_le_bytes)
}

pub(crate) fn u64_at(data: &[u8], off: usize) -> Option<u64> {
    array(data, off).map(u64::from_le_bytes)
}

/// Rounds `v` up to a multiple of 4.
pub(crate) fn align4(v: usize) -> Option<usize> {
    Some(v.checked_add(3)? & !3)
}

/// Number of 4 KiB pages needed for `bytes` bytes.
pub(crate) fn pages_for(bytes: u64) -> Option<u64> {
    Some(bytes.checked_add(crate::PAGE_SIZE - 1)? / crate::PAGE_SIZE)
}

/// The bytes of a C string stored in `data`: up to the first NUL, or all of `data`.
pub(crate) fn c_str(data: &[u8]) -> &[u8] {
    match data.iter().position(|&b| b == 0) {
        Some(n) => data.get(..n).unwrap_or(data),
        None => data,
    }
}
