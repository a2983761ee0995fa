//! ELF64 parsing for PV kernels, as Xen's libelf does it (`xen/common/libelf/`): header,
//! program headers, loadable segments placed by `p_paddr`, and the note areas (PT_NOTE
//! segments, SHT_NOTE sections as a fallback).
//!
//! The file is untrusted: every header field that is used as an offset or size is checked
//! against the file with checked arithmetic before any byte is read.

use alloc::vec::Vec;

use crate::bytes::{slice, u16_at, u32_at, u64_at, u8_at};
use crate::BuildError;

/// `e_machine` of x86_64.
pub const EM_X86_64: u16 = 62;
/// `e_type` of an executable.
pub const ET_EXEC: u16 = 2;
/// Loadable segment.
pub const PT_LOAD: u32 = 1;
/// Note segment.
pub const PT_NOTE: u32 = 4;
/// Note section.
pub const SHT_NOTE: u32 = 7;
/// Segment permission bits (any of them makes a PT_LOAD segment loadable for libelf).
pub const PF_X: u32 = 1;
/// Writable segment.
pub const PF_W: u32 = 2;
/// Readable segment.
pub const PF_R: u32 = 4;

/// Size of the ELF64 file header.
pub const EHDR_SIZE: usize = 64;
/// Size of an ELF64 program header.
pub const PHDR_SIZE: usize = 56;
/// Size of an ELF64 section header.
pub const SHDR_SIZE: usize = 64;

/// The four magic bytes at the start of every ELF file.
pub const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];

/// A validated loadable segment: its file bytes are inside the file, `file_size <=
/// mem_size` and `paddr + mem_size` does not overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    /// Program header index.
    pub index: u16,
    /// `p_paddr`: where the segment goes (relative to the image, see [`ElfFile::paddr_range`]).
    pub paddr: u64,
    /// `p_vaddr` (informational: Xen places segments by `p_paddr`).
    pub vaddr: u64,
    /// `p_offset`.
    pub file_offset: u64,
    /// `p_filesz`: bytes copied from the file.
    pub file_size: u64,
    /// `p_memsz`: bytes occupied in memory; the part past `file_size` is zeroed (bss).
    pub mem_size: u64,
}

/// A parsed ELF64 x86_64 executable.
#[derive(Clone, Debug)]
pub struct ElfFile<'a> {
    data: &'a [u8],
    entry: u64,
    phoff: usize,
    phnum: u16,
    shoff: u64,
    shnum: u16,
    shentsize: u16,
    segments: Vec<LoadSegment>,
    pstart: u64,
    pend: u64,
}

impl<'a> ElfFile<'a> {
    /// Parses and validates the ELF header, the program header table and every loadable
    /// segment.
    pub fn parse(data: &'a [u8]) -> Result<Self, BuildError> {
        if data.len() < EHDR_SIZE {
            return Err(if data.starts_with(&ELF_MAGIC) {
                BuildError::TruncatedElfHeader
            } else {
                BuildError::NotElf
            });
        }
        if !data.starts_with(&ELF_MAGIC) {
            return Err(BuildError::NotElf);
        }
        let field8 = |off| u8_at(data, off).ok_or(BuildError::NotElf);
        let field16 = |off| u16_at(data, off).ok_or(BuildError::NotElf);
        let field32 = |off| u32_at(data, off).ok_or(BuildError::NotElf);
        let field64 = |off| u64_at(data, off).ok_or(BuildError::NotElf);

        if field8(4)? != 2 {
            return Err(BuildError::NotElf64);
        }
        if field8(5)? != 1 {
            return Err(BuildError::NotLittleEndian);
        }
        if field8(6)? != 1 || field32(20)? != 1 {
            return Err(BuildError::BadElfVersion);
        }
        let e_type = field16(16)?;
        if e_type != ET_EXEC {
            return Err(BuildError::NotExecutable { e_type });
        }
        let machine = field16(18)?;
        if machine != EM_X86_64 {
            return Err(BuildError::WrongMachine { machine });
        }
        let entry = field64(24)?;
        let phoff = field64(32)?;
        let shoff = field64(40)?;
        let phentsize = field16(54)?;
        let phnum = field16(56)?;
        let shentsize = field16(58)?;
        let shnum = field16(60)?;

        if phnum != 0 && usize::from(phentsize) != PHDR_SIZE {
            return Err(BuildError::BadProgramHeaderSize { size: phentsize });
        }
        let table_len = (u64::from(phnum)) * PHDR_SIZE as u64;
        slice(data, phoff, table_len).ok_or(BuildError::ProgramHeadersOutOfFile)?;
        let phoff = usize::try_from(phoff).map_err(|_| BuildError::ProgramHeadersOutOfFile)?;

        let mut elf = ElfFile {
            data,
            entry,
            phoff,
            phnum,
            shoff,
            shnum,
            shentsize,
            segments: Vec::new(),
            pstart: u64::MAX,
            pend: 0,
        };

        for index in 0..phnum {
            let ph = elf.phdr(index).ok_or(BuildError::ProgramHeadersOutOfFile)?;
            let p_type = u32_at(ph, 0).ok_or(BuildError::ProgramHeadersOutOfFile)?;
            let p_flags = u32_at(ph, 4).ok_or(BuildError::ProgramHeadersOutOfFile)?;
            // libelf's elf_phdr_is_loadable: PT_LOAD with at least one permission bit.
            if p_type != PT_LOAD || p_flags & (PF_R | PF_W | PF_X) == 0 {
                continue;
            }
            let get = |off| u64_at(ph, off).ok_or(BuildError::ProgramHeadersOutOfFile);
            let seg = LoadSegment {
                index,
                file_offset: get(8)?,
                vaddr: get(16)?,
                paddr: get(24)?,
                file_size: get(32)?,
                mem_size: get(40)?,
            };
            if seg.file_size > seg.mem_size {
                return Err(BuildError::SegmentFileSizeExceedsMemSize { index });
            }
            if slice(data, seg.file_offset, seg.file_size).is_none() {
                return Err(BuildError::SegmentOutOfFile { index });
            }
            let end = seg
                .paddr
                .checked_add(seg.mem_size)
                .ok_or(BuildError::SegmentAddressOverflow { index })?;
            elf.pstart = elf.pstart.min(seg.paddr);
            elf.pend = elf.pend.max(end);
            elf.segments.push(seg);
        }
        if elf.segments.is_empty() {
            return Err(BuildError::NoLoadableSegments);
        }
        Ok(elf)
    }

    /// The raw program header `index` (56 bytes); `None` only if out of range.
    fn phdr(&self, index: u16) -> Option<&'a [u8]> {
        let off = usize::from(index)
            .checked_mul(PHDR_SIZE)?
            .checked_add(self.phoff)?;
        self.data.get(off..off.checked_add(PHDR_SIZE)?)
    }

    /// The whole file.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// `e_entry`.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The loadable segments, in program header order.
    pub fn segments(&self) -> &[LoadSegment] {
        &self.segments
    }

    /// The file bytes of a segment returned by [`segments`](Self::segments).
    pub fn segment_bytes(&self, seg: &LoadSegment) -> &'a [u8] {
        // Checked in `parse`; an empty slice can only be returned for a foreign segment.
        slice(self.data, seg.file_offset, seg.file_size).unwrap_or(&[])
    }

    /// `(pstart, pend)`: lowest `p_paddr` and highest `p_paddr + p_memsz` of the loadable
    /// segments (libelf's `pstart`/`pend`).
    pub fn paddr_range(&self) -> (u64, u64) {
        (self.pstart, self.pend)
    }

    /// Contents of every PT_NOTE segment, as `(program header index, bytes)`. Segments with
    /// `p_offset == 0` are skipped, as libelf does (some binutils leave it unset).
    pub fn note_segments(&self) -> Result<Vec<(u16, &'a [u8])>, BuildError> {
        let mut out = Vec::new();
        for index in 0..self.phnum {
            let ph = self
                .phdr(index)
                .ok_or(BuildError::ProgramHeadersOutOfFile)?;
            let get = |off| u64_at(ph, off).ok_or(BuildError::ProgramHeadersOutOfFile);
            if u32_at(ph, 0) != Some(PT_NOTE) {
                continue;
            }
            let (offset, size) = (get(8)?, get(32)?);
            if offset == 0 {
                continue;
            }
            let bytes =
                slice(self.data, offset, size).ok_or(BuildError::NotesOutOfFile { index })?;
            out.push((index, bytes));
        }
        Ok(out)
    }

    /// Contents of every SHT_NOTE section (section 0 is skipped: it is always the null
    /// section), as `(section index, bytes)`.
    pub fn note_sections(&self) -> Result<Vec<(u16, &'a [u8])>, BuildError> {
        let mut out = Vec::new();
        if self.shnum == 0 {
            return Ok(out);
        }
        if usize::from(self.shentsize) != SHDR_SIZE {
            return Err(BuildError::BadSectionHeaderSize {
                size: self.shentsize,
            });
        }
        let table = slice(
            self.data,
            self.shoff,
            u64::from(self.shnum) * SHDR_SIZE as u64,
        )
        .ok_or(BuildError::SectionHeadersOutOfFile)?;
        for (index, sh) in (0u16..).zip(table.chunks_exact(SHDR_SIZE)).skip(1) {
            if u32_at(sh, 4) != Some(SHT_NOTE) {
                continue;
            }
            let get = |off| u64_at(sh, off).ok_or(BuildError::SectionHeadersOutOfFile);
            let (offset, size) = (get(24)?, get(32)?);
            let bytes =
                slice(self.data, offset, size).ok_or(BuildError::NotesOutOfFile { index })?;
            out.push((index, bytes));
        }
        Ok(out)
    }
}
