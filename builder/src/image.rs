//! A PV kernel accepted for building: the ELF, its Xen notes, and the addresses derived
//! from them, after the checks Xen's libelf makes (`elf_xen_note_check`,
//! `elf_xen_addr_calc_check`) and the feature check of a domain builder.

use crate::bzimage::kernel_elf;
use crate::elf::ElfFile;
use crate::notes::{first_feature_name, KernelFeatures, XenNotes};
use crate::{BuildError, PAGE_SIZE};

/// A parsed and accepted PV kernel.
#[derive(Clone, Debug)]
pub struct KernelImage<'a> {
    elf: ElfFile<'a>,
    notes: XenNotes<'a>,
    features: KernelFeatures,
    virt_base: u64,
    virt_kstart: u64,
    virt_kend: u64,
    entry: u64,
}

impl<'a> KernelImage<'a> {
    /// Parses `data` (an ELF64 kernel, or a bzImage whose payload is an uncompressed ELF)
    /// and checks it as Xen would.
    ///
    /// `offered_features` is the XENFEAT bitmap (submap 0) the hypervisor offers this
    /// domain; every feature the kernel requires with `!` must be in it. (Linux requires
    /// `writable_page_tables`: include bit 0 to boot it, as Xen's builders accept it.)
    pub fn parse(data: &'a [u8], offered_features: u32) -> Result<Self, BuildError> {
        let elf = ElfFile::parse(kernel_elf(data)?)?;
        let notes = XenNotes::from_elf(&elf)?;

        // elf_xen_note_check: generic loader or Linux, then the interface version.
        let loader_ok = notes.loader.is_some_and(|l| l.starts_with(b"generic"));
        let linux = notes.guest_os.is_some_and(|g| g.starts_with(b"linux"));
        if !loader_ok && !linux {
            return Err(BuildError::UnsupportedLoader);
        }
        if !notes.xen_version.is_some_and(|v| v.starts_with(b"xen-3.0")) {
            return Err(BuildError::BadXenVersion);
        }

        // elf_xen_addr_calc_check. With notes, PADDR_OFFSET defaults to 0 and VIRT_BASE
        // to 0; the arithmetic wraps like libelf's and the result is range-checked below.
        if notes.paddr_offset.is_some() && notes.virt_base.is_none() {
            return Err(BuildError::PaddrOffsetWithoutVirtBase);
        }
        let virt_base = notes.virt_base.unwrap_or(0);
        let virt_offset = virt_base.wrapping_sub(notes.paddr_offset.unwrap_or(0));
        let (pstart, pend) = elf.paddr_range();
        let virt_kstart = pstart.wrapping_add(virt_offset);
        let virt_kend = pend.wrapping_add(virt_offset);
        let entry = notes.entry.unwrap_or(elf.entry());
        if virt_kstart > virt_kend {
            return Err(BuildError::ImageBoundsInvalid);
        }
        if entry < virt_kstart || entry > virt_kend {
            return Err(BuildError::EntryOutsideImage { entry });
        }
        if virt_base > virt_kstart {
            return Err(BuildError::VirtBaseAboveImage);
        }
        if let Some(va) = notes.init_p2m {
            if (virt_kstart..virt_kend).contains(&va) {
                return Err(BuildError::InitP2mInsideImage { va });
            }
        }

        let features = notes.kernel_features()?;
        let missing = features.required & !offered_features;
        if missing != 0 {
            return Err(BuildError::UnsupportedFeature {
                name: first_feature_name(notes.features.unwrap_or(&[]), missing),
            });
        }

        // libxc places the image with page granularity (xc_dom_alloc_segment).
        if virt_base % PAGE_SIZE != 0 || virt_kstart % PAGE_SIZE != 0 {
            return Err(BuildError::MisalignedImage);
        }
        if let Some(va) = notes.hypercall_page {
            if !(virt_kstart..virt_kend).contains(&va) {
                return Err(BuildError::HypercallPageOutsideImage { va });
            }
        }

        Ok(KernelImage {
            elf,
            notes,
            features,
            virt_base,
            virt_kstart,
            virt_kend,
            entry,
        })
    }

    /// The ELF file.
    pub fn elf(&self) -> &ElfFile<'a> {
        &self.elf
    }

    /// The Xen notes as found.
    pub fn notes(&self) -> &XenNotes<'a> {
        &self.notes
    }

    /// The kernel's own feature bitmaps (FEATURES, SUPPORTED_FEATURES).
    pub fn kernel_features(&self) -> KernelFeatures {
        self.features
    }

    /// VA of pseudo-physical address 0 (VIRT_BASE, default 0).
    pub fn virt_base(&self) -> u64 {
        self.virt_base
    }

    /// `[virt_kstart, virt_kend)`: the image's virtual range.
    pub fn virt_range(&self) -> (u64, u64) {
        (self.virt_kstart, self.virt_kend)
    }

    /// The PV entry point (ENTRY note, else `e_entry`).
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// VA of the hypercall page, if the kernel asks for one.
    pub fn hypercall_page_va(&self) -> Option<u64> {
        self.notes.hypercall_page
    }

    /// The INIT_P2M VA if it is usable: below VIRT_BASE and page aligned (otherwise libxc
    /// ignores the note and maps the p2m list inside the initial mapping).
    pub fn usable_init_p2m(&self) -> Option<u64> {
        self.notes
            .init_p2m
            .filter(|&va| va < self.virt_base && va % PAGE_SIZE == 0)
    }

    /// Whether the kernel accepts an unmapped initrd passed by PFN (MOD_START_PFN != 0).
    pub fn unmapped_initrd(&self) -> bool {
        self.notes.mod_start_pfn.is_some_and(|v| v != 0)
    }
}
