//! Test fixtures: a tiny ELF64 emitter and a mock domain memory.
#![allow(dead_code)]

use std::collections::HashMap;

use domain_builder::BuildMemory;
use xen_abi::{Mfn, Pfn};

pub const XEN_VERSION: u32 = 5;
pub const GUEST_OS: u32 = 6;
pub const LOADER: u32 = 8;
pub const FEATURES: u32 = 10;
pub const ENTRY: u32 = 1;
pub const HYPERCALL_PAGE: u32 = 2;
pub const VIRT_BASE: u32 = 3;
pub const PADDR_OFFSET: u32 = 4;
pub const INIT_P2M: u32 = 15;
pub const MOD_START_PFN: u32 = 16;
pub const SUPPORTED_FEATURES: u32 = 17;

/// All features rxen might offer (for tests that are not about features).
pub const ALL_FEATURES: u32 = u32::MAX;

#[derive(Clone, Debug)]
pub struct Seg {
    pub paddr: u64,
    pub vaddr: u64,
    pub data: Vec<u8>,
    pub memsz: u64,
    pub flags: u32,
}

#[derive(Clone, Debug)]
pub struct Note {
    pub owner: Vec<u8>,
    pub kind: u32,
    pub desc: Vec<u8>,
}

impl Note {
    pub fn xen(kind: u32, desc: Vec<u8>) -> Self {
        Note {
            owner: b"Xen\0".to_vec(),
            kind,
            desc,
        }
    }
    pub fn str(kind: u32, s: &str) -> Self {
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        Self::xen(kind, d)
    }
    pub fn u64(kind: u32, v: u64) -> Self {
        Self::xen(kind, v.to_le_bytes().to_vec())
    }
    pub fn u32(kind: u32, v: u32) -> Self {
        Self::xen(kind, v.to_le_bytes().to_vec())
    }
}

#[derive(Clone, Debug)]
pub struct ElfSpec {
    pub e_type: u16,
    pub machine: u16,
    pub entry: u64,
    pub segments: Vec<Seg>,
    pub notes: Vec<Note>,
    /// Put the notes in an SHT_NOTE section instead of a PT_NOTE segment.
    pub notes_in_section: bool,
}

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

pub fn note_bytes(notes: &[Note]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in notes {
        out.extend_from_slice(&(n.owner.len() as u32).to_le_bytes());
        out.extend_from_slice(&(n.desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&n.kind.to_le_bytes());
        out.extend_from_slice(&n.owner);
        pad4(&mut out);
        out.extend_from_slice(&n.desc);
        pad4(&mut out);
    }
    out
}

impl ElfSpec {
    pub fn emit(&self) -> Vec<u8> {
        let notes = note_bytes(&self.notes);
        let with_note_ph = !self.notes_in_section && !self.notes.is_empty();
        let phnum = self.segments.len() + usize::from(with_note_ph);
        let mut out = vec![0u8; 64 + phnum * 56];
        let notes_off = out.len();
        out.extend_from_slice(&notes);
        let mut seg_offs = Vec::new();
        for s in &self.segments {
            while !out.len().is_multiple_of(16) {
                out.push(0);
            }
            seg_offs.push(out.len());
            out.extend_from_slice(&s.data);
        }
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let (shoff, shnum) = if self.notes_in_section {
            let shoff = out.len();
            out.extend_from_slice(&[0u8; 64]); // null section
            let mut sh = [0u8; 64];
            sh[4..8].copy_from_slice(&7u32.to_le_bytes()); // SHT_NOTE
            sh[24..32].copy_from_slice(&(notes_off as u64).to_le_bytes());
            sh[32..40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
            out.extend_from_slice(&sh);
            (shoff as u64, 2u16)
        } else {
            (0, 0)
        };
        // ELF header.
        out[0..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[6] = 1;
        out[16..18].copy_from_slice(&self.e_type.to_le_bytes());
        out[18..20].copy_from_slice(&self.machine.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..32].copy_from_slice(&self.entry.to_le_bytes());
        out[32..40].copy_from_slice(&64u64.to_le_bytes());
        out[40..48].copy_from_slice(&shoff.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        out[58..60].copy_from_slice(&64u16.to_le_bytes());
        out[60..62].copy_from_slice(&shnum.to_le_bytes());
        let mut ph = 64;
        for (s, off) in self.segments.iter().zip(&seg_offs) {
            let p = &mut out[ph..ph + 56];
            p[0..4].copy_from_slice(&1u32.to_le_bytes());
            p[4..8].copy_from_slice(&s.flags.to_le_bytes());
            p[8..16].copy_from_slice(&(*off as u64).to_le_bytes());
            p[16..24].copy_from_slice(&s.vaddr.to_le_bytes());
            p[24..32].copy_from_slice(&s.paddr.to_le_bytes());
            p[32..40].copy_from_slice(&(s.data.len() as u64).to_le_bytes());
            p[40..48].copy_from_slice(&s.memsz.to_le_bytes());
            p[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
            ph += 56;
        }
        if with_note_ph {
            let p = &mut out[ph..ph + 56];
            p[0..4].copy_from_slice(&4u32.to_le_bytes());
            p[4..8].copy_from_slice(&4u32.to_le_bytes());
            p[8..16].copy_from_slice(&(notes_off as u64).to_le_bytes());
            p[32..40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
            p[40..48].copy_from_slice(&(notes.len() as u64).to_le_bytes());
            p[48..56].copy_from_slice(&4u64.to_le_bytes());
        }
        out
    }

    pub fn set_note(&mut self, note: Note) {
        self.notes.retain(|n| n.kind != note.kind);
        self.notes.push(note);
    }

    pub fn remove_note(&mut self, kind: u32) {
        self.notes.retain(|n| n.kind != kind);
    }
}

/// Bytes with a recognisable pattern.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// A Linux-like kernel (VIRT_BASE 0xffffffff80000000, image at p_paddr 0x1000000, INIT_P2M
/// 512 GiB, MOD_START_PFN): a text segment and a data segment with bss.
pub fn linux_like() -> ElfSpec {
    let base = 0xffff_ffff_8000_0000u64;
    ElfSpec {
        e_type: 2,
        machine: 62,
        entry: base + 0x100_0000,
        segments: vec![
            Seg {
                paddr: 0x100_0000,
                vaddr: base + 0x100_0000,
                data: pattern(0x1800, 7),
                memsz: 0x1800,
                flags: 5,
            },
            Seg {
                // p_vaddr 0 like Linux's .data..percpu: placement must use p_paddr.
                paddr: 0x100_2000,
                vaddr: 0,
                data: pattern(0x800, 99),
                memsz: 0x2000,
                flags: 6,
            },
        ],
        notes: vec![
            Note::str(GUEST_OS, "linux"),
            Note::str(6 + 1, "2.6"),
            Note::str(XEN_VERSION, "xen-3.0"),
            Note::u64(VIRT_BASE, base),
            Note::u64(PADDR_OFFSET, 0),
            Note::u64(ENTRY, base + 0x100_0040),
            Note::str(FEATURES, "!writable_page_tables|pae_pgdir_above_4gb"),
            Note::u32(SUPPORTED_FEATURES, 0x8801),
            Note::str(LOADER, "generic"),
            Note::u64(INIT_P2M, 0x80_0000_0000),
            Note::u64(MOD_START_PFN, 1),
            Note::xen(13, [1u64.to_le_bytes(), 1u64.to_le_bytes()].concat()),
            Note::u64(14, 1),
            Note::u64(12, 0xffff_8000_0000_0000),
        ],
        notes_in_section: false,
    }
}

/// An XTF-like kernel: VIRT_BASE 0, image at 1 MiB, hypercall page, no INIT_P2M.
pub fn xtf_like() -> ElfSpec {
    ElfSpec {
        e_type: 2,
        machine: 62,
        entry: 0x10_0000,
        segments: vec![Seg {
            paddr: 0x10_0000,
            vaddr: 0x10_0000,
            data: pattern(0x3000, 3),
            memsz: 0x5000,
            flags: 7,
        }],
        notes: vec![
            Note::str(GUEST_OS, "XTF"),
            Note::str(XEN_VERSION, "xen-3.0"),
            Note::str(LOADER, "generic"),
            Note::u64(HYPERCALL_PAGE, 0x10_2000),
            Note::str(FEATURES, "!writable_page_tables|pae_pgdir_above_4gb"),
        ],
        notes_in_section: false,
    }
}

/// Sparse mock memory: absent frames read as zero; MFNs are a non-identity permutation.
pub struct MockMem {
    pub nr_pages: u64,
    pub pages: HashMap<u64, Box<[u8; 4096]>>,
    pub writes: usize,
}

impl MockMem {
    pub fn new(nr_pages: u64) -> Self {
        MockMem {
            nr_pages,
            pages: HashMap::new(),
            writes: 0,
        }
    }
    pub fn mfn_of(&self, pfn: u64) -> u64 {
        assert!(pfn < self.nr_pages, "pfn {pfn:#x} out of range");
        0x40_0000 + (self.nr_pages - 1 - pfn) * 3
    }
    pub fn pfn_of(&self, mfn: u64) -> Option<u64> {
        let d = mfn.checked_sub(0x40_0000)?;
        if d % 3 != 0 || d / 3 >= self.nr_pages {
            return None;
        }
        Some(self.nr_pages - 1 - d / 3)
    }
    pub fn read(&self, pfn: u64, off: usize, len: usize) -> Vec<u8> {
        match self.pages.get(&pfn) {
            Some(p) => p[off..off + len].to_vec(),
            None => vec![0; len],
        }
    }
    pub fn u64_at(&self, pfn: u64, off: usize) -> u64 {
        u64::from_le_bytes(self.read(pfn, off, 8).try_into().unwrap())
    }
    pub fn u32_at(&self, pfn: u64, off: usize) -> u32 {
        u32::from_le_bytes(self.read(pfn, off, 4).try_into().unwrap())
    }
}

impl BuildMemory for MockMem {
    fn mfn(&self, pfn: Pfn) -> Mfn {
        Mfn::new(self.mfn_of(pfn.raw()))
    }
    fn write(&mut self, pfn: Pfn, offset: usize, bytes: &[u8]) {
        assert!(
            pfn.raw() < self.nr_pages,
            "write to pfn {pfn:?} beyond nr_pages"
        );
        assert!(offset + bytes.len() <= 4096, "write crosses a page");
        self.writes += 1;
        let page = self
            .pages
            .entry(pfn.raw())
            .or_insert_with(|| Box::new([0; 4096]));
        page[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
    fn zero(&mut self, pfn: Pfn) {
        assert!(
            pfn.raw() < self.nr_pages,
            "zero of pfn {pfn:?} beyond nr_pages"
        );
        self.pages.remove(&pfn.raw());
    }
}
