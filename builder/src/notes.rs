//! Xen ELF notes (`xen/include/public/elfnote.h`): the PV kernel's description of itself
//! (entry point, VIRT_BASE, required features, INIT_P2M, ...), read as libelf's
//! `elf_xen_parse_note` does.
//!
//! Notes are taken from PT_NOTE segments; only if those hold no Xen note are SHT_NOTE
//! sections used. Only notes whose owner is `"Xen"` count; unknown note types are ignored.
//! When a note appears twice the later one wins, as in libelf.

use xen_abi::elfnote::{
    XEN_ELFNOTE_BSD_SYMTAB, XEN_ELFNOTE_ENTRY, XEN_ELFNOTE_FEATURES, XEN_ELFNOTE_GUEST_OS,
    XEN_ELFNOTE_GUEST_VERSION, XEN_ELFNOTE_HV_START_LOW, XEN_ELFNOTE_HYPERCALL_PAGE,
    XEN_ELFNOTE_INFO, XEN_ELFNOTE_INIT_P2M, XEN_ELFNOTE_L1_MFN_VALID, XEN_ELFNOTE_LOADER,
    XEN_ELFNOTE_MOD_START_PFN, XEN_ELFNOTE_PADDR_OFFSET, XEN_ELFNOTE_PAE_MODE,
    XEN_ELFNOTE_PHYS32_ENTRY, XEN_ELFNOTE_PHYS32_RELOC, XEN_ELFNOTE_SUPPORTED_FEATURES,
    XEN_ELFNOTE_SUSPEND_CANCEL, XEN_ELFNOTE_VIRT_BASE, XEN_ELFNOTE_XEN_VERSION,
};
use xen_abi::features::feature_from_name;

use crate::bytes::{align4, c_str, u32_at, u64_at};
use crate::elf::ElfFile;
use crate::{BuildError, FeatureName};

/// `PHYS32_RELOC` (PVH relocation constraints; parsed for completeness, unused for PV).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phys32Reloc {
    /// Required alignment.
    pub align: u32,
    /// Lowest allowed load address, if given.
    pub min: Option<u32>,
    /// Highest allowed load address, if given.
    pub max: Option<u32>,
}

/// All Xen notes of a kernel (ABI.md 1.2). Strings are the note's bytes up to the first NUL,
/// borrowed from the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenNotes<'a> {
    /// 0 INFO: free-form.
    pub info: Option<&'a [u8]>,
    /// 1 ENTRY: VA of the PV entry point (default: `e_entry`).
    pub entry: Option<u64>,
    /// 2 HYPERCALL_PAGE: VA of the page to fill with hypercall stubs.
    pub hypercall_page: Option<u64>,
    /// 3 VIRT_BASE: VA of pseudo-physical address 0 (default 0).
    pub virt_base: Option<u64>,
    /// 4 PADDR_OFFSET: subtracted from `p_paddr` before adding VIRT_BASE (default 0).
    pub paddr_offset: Option<u64>,
    /// 5 XEN_VERSION: must start with `"xen-3.0"`.
    pub xen_version: Option<&'a [u8]>,
    /// 6 GUEST_OS.
    pub guest_os: Option<&'a [u8]>,
    /// 7 GUEST_VERSION.
    pub guest_version: Option<&'a [u8]>,
    /// 8 LOADER: must start with `"generic"` unless GUEST_OS is Linux.
    pub loader: Option<&'a [u8]>,
    /// 9 PAE_MODE (32-bit only).
    pub pae_mode: Option<&'a [u8]>,
    /// 10 FEATURES: `|`-separated feature names, `!` = required.
    pub features: Option<&'a [u8]>,
    /// 11 BSD_SYMTAB (not supported by this builder; ignored).
    pub bsd_symtab: Option<&'a [u8]>,
    /// 12 HV_START_LOW.
    pub hv_start_low: Option<u64>,
    /// 13 L1_MFN_VALID: first `(mask, value)` pair.
    pub l1_mfn_valid: Option<(u64, u64)>,
    /// 14 SUSPEND_CANCEL.
    pub suspend_cancel: Option<u64>,
    /// 15 INIT_P2M: VA at which to map the p2m list, outside the initial mapping.
    pub init_p2m: Option<u64>,
    /// 16 MOD_START_PFN: non-zero = the initrd may be left unmapped and passed as a PFN.
    pub mod_start_pfn: Option<u64>,
    /// 17 SUPPORTED_FEATURES: XENFEAT bitmap (submap 0).
    pub supported_features: Option<u32>,
    /// 18 PHYS32_ENTRY (PVH only).
    pub phys32_entry: Option<u64>,
    /// 19 PHYS32_RELOC (PVH only).
    pub phys32_reloc: Option<Phys32Reloc>,
}

/// Feature bitmaps (XENFEAT submap 0) declared by a kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelFeatures {
    /// Features the kernel can use: every name in FEATURES plus SUPPORTED_FEATURES.
    pub supported: u32,
    /// Features the kernel requires (`!name` in FEATURES).
    pub required: u32,
}

impl<'a> XenNotes<'a> {
    /// Reads the Xen notes of `elf`. Fails with [`BuildError::NotXenImage`] if there are
    /// none.
    pub fn from_elf(elf: &ElfFile<'a>) -> Result<Self, BuildError> {
        let mut notes = XenNotes::default();
        let mut found = 0usize;
        for (_, area) in elf.note_segments()? {
            found = found.saturating_add(notes.parse_area(area)?);
        }
        if found == 0 {
            for (_, area) in elf.note_sections()? {
                found = found.saturating_add(notes.parse_area(area)?);
            }
        }
        if found == 0 {
            return Err(BuildError::NotXenImage);
        }
        Ok(notes)
    }

    /// Parses one note area (the contents of a PT_NOTE segment or SHT_NOTE section) into
    /// `self`; returns how many Xen notes it held. Trailing bytes too short for a note
    /// header are ignored (alignment padding).
    pub fn parse_area(&mut self, area: &'a [u8]) -> Result<usize, BuildError> {
        let mut pos = 0usize;
        let mut count = 0usize;
        // Each iteration consumes at least the 12-byte header, so this terminates.
        while area.len().saturating_sub(pos) >= 12 {
            let namesz = u32_at(area, pos).ok_or(BuildError::MalformedNote)?;
            let descsz = u32_at(area, pos + 4).ok_or(BuildError::MalformedNote)?;
            let kind = u32_at(area, pos + 8).ok_or(BuildError::MalformedNote)?;
            let name_start = pos + 12;
            let name_end = name_start
                .checked_add(usize::try_from(namesz).map_err(|_| BuildError::MalformedNote)?)
                .ok_or(BuildError::MalformedNote)?;
            let desc_start = align4(name_end).ok_or(BuildError::MalformedNote)?;
            let desc_end = desc_start
                .checked_add(usize::try_from(descsz).map_err(|_| BuildError::MalformedNote)?)
                .ok_or(BuildError::MalformedNote)?;
            let name = area
                .get(name_start..name_end)
                .ok_or(BuildError::MalformedNote)?;
            let desc = area
                .get(desc_start..desc_end)
                .ok_or(BuildError::MalformedNote)?;
            if c_str(name) == b"Xen" {
                self.apply(kind, desc)?;
                count += 1;
            }
            pos = align4(desc_end).ok_or(BuildError::MalformedNote)?;
        }
        Ok(count)
    }

    fn apply(&mut self, kind: u32, desc: &'a [u8]) -> Result<(), BuildError> {
        let bad = || BuildError::BadNoteSize {
            note: kind,
            size: u32::try_from(desc.len()).unwrap_or(u32::MAX),
        };
        let number = || match desc.len() {
            4 => u32_at(desc, 0).map(u64::from).ok_or_else(bad),
            8 => u64_at(desc, 0).ok_or_else(bad),
            _ => Err(bad()),
        };
        let string = || Some(c_str(desc));
        match kind {
            XEN_ELFNOTE_INFO => self.info = string(),
            XEN_ELFNOTE_ENTRY => self.entry = Some(number()?),
            XEN_ELFNOTE_HYPERCALL_PAGE => self.hypercall_page = Some(number()?),
            XEN_ELFNOTE_VIRT_BASE => self.virt_base = Some(number()?),
            XEN_ELFNOTE_PADDR_OFFSET => self.paddr_offset = Some(number()?),
            XEN_ELFNOTE_XEN_VERSION => self.xen_version = string(),
            XEN_ELFNOTE_GUEST_OS => self.guest_os = string(),
            XEN_ELFNOTE_GUEST_VERSION => self.guest_version = string(),
            XEN_ELFNOTE_LOADER => self.loader = string(),
            XEN_ELFNOTE_PAE_MODE => self.pae_mode = string(),
            XEN_ELFNOTE_FEATURES => self.features = string(),
            XEN_ELFNOTE_BSD_SYMTAB => self.bsd_symtab = string(),
            XEN_ELFNOTE_HV_START_LOW => self.hv_start_low = Some(number()?),
            XEN_ELFNOTE_L1_MFN_VALID => {
                // Pairs of native words: u64 pairs for 64-bit kernels, u32 pairs for 32-bit.
                self.l1_mfn_valid = Some(if desc.len() >= 16 && desc.len().is_multiple_of(16) {
                    (
                        u64_at(desc, 0).ok_or_else(bad)?,
                        u64_at(desc, 8).ok_or_else(bad)?,
                    )
                } else if desc.len() == 8 {
                    (
                        u32_at(desc, 0).map(u64::from).ok_or_else(bad)?,
                        u32_at(desc, 4).map(u64::from).ok_or_else(bad)?,
                    )
                } else {
                    return Err(bad());
                });
            }
            XEN_ELFNOTE_SUSPEND_CANCEL => self.suspend_cancel = Some(number()?),
            XEN_ELFNOTE_INIT_P2M => self.init_p2m = Some(number()?),
            XEN_ELFNOTE_MOD_START_PFN => self.mod_start_pfn = Some(number()?),
            XEN_ELFNOTE_SUPPORTED_FEATURES => {
                // An array of u32 submaps; only submap 0 exists (XENFEAT_NR_SUBMAPS = 1).
                if desc.len() < 4 || !desc.len().is_multiple_of(4) {
                    return Err(bad());
                }
                self.supported_features = Some(u32_at(desc, 0).ok_or_else(bad)?);
            }
            XEN_ELFNOTE_PHYS32_ENTRY => self.phys32_entry = Some(number()?),
            XEN_ELFNOTE_PHYS32_RELOC => {
                if !matches!(desc.len(), 4 | 8 | 12) {
                    return Err(bad());
                }
                self.phys32_reloc = Some(Phys32Reloc {
                    align: u32_at(desc, 0).ok_or_else(bad)?,
                    min: u32_at(desc, 4),
                    max: u32_at(desc, 8),
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// The kernel's feature bitmaps from FEATURES and SUPPORTED_FEATURES.
    ///
    /// As in libelf, an unknown name is ignored unless it is required (`!name`), which is an
    /// error ([`BuildError::UnknownFeature`]).
    pub fn kernel_features(&self) -> Result<KernelFeatures, BuildError> {
        let mut f = KernelFeatures {
            supported: self.supported_features.unwrap_or(0),
            required: 0,
        };
        for token in self.features.unwrap_or(&[]).split(|&b| b == b'|') {
            let (name, required) = match token.split_first() {
                Some((b'!', rest)) => (rest, true),
                _ => (token, false),
            };
            let bit = core::str::from_utf8(name)
                .ok()
                .and_then(feature_from_name)
                .and_then(|n| 1u32.checked_shl(n));
            match (bit, required) {
                (Some(bit), true) => {
                    f.supported |= bit;
                    f.required |= bit;
                }
                (Some(bit), false) => f.supported |= bit,
                (None, true) => {
                    return Err(BuildError::UnknownFeature {
                        name: FeatureName::new(name),
                    })
                }
                (None, false) => {}
            }
        }
        Ok(f)
    }
}

/// The `FEATURES` spelling of the first feature bit set in `bits` (for error messages).
pub(crate) fn first_feature_name(features: &[u8], bits: u32) -> FeatureName {
    for token in features.split(|&b| b == b'|') {
        let name = token.strip_prefix(b"!").unwrap_or(token);
        let bit = core::str::from_utf8(name)
            .ok()
            .and_then(feature_from_name)
            .and_then(|n| 1u32.checked_shl(n));
        if bit.is_some_and(|b| b & bits != 0) {
            return FeatureName::new(name);
        }
    }
    FeatureName::new(b"?")
}
