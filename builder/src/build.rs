//! Writing a planned [`Layout`] into the domain's memory (libxc `xc_dom_build_image`'s
//! loaders, `setup_pgtables_x86_64`, `start_info_x86_64`; Xen `elf_load_binary`): kernel
//! segments, p2m list, initial page tables, hypercall page, start_info and initrd.
//!
//! Memory is reached only through [`BuildMemory`], so the same code runs in the hypervisor
//! (building dom0 in frames it owns) and in dom0's toolstack (foreign-mapping a domU).

use alloc::vec;
use alloc::vec::Vec;

use xen_abi::xen::{StartInfo, MAX_GUEST_CMDLINE, SIF_MOD_START_PFN, START_INFO_MAGIC};
use xen_abi::{EvtchnPort, Mfn, Pfn};
use zerocopy::{FromZeros, IntoBytes};

use crate::bytes::c_str;
use crate::hypercall_page::fill_hypercall_page;
use crate::{BuildError, KernelImage, Layout, PAGE_SIZE};

/// Present.
const PTE_P: u64 = 1 << 0;
/// Writable.
const PTE_RW: u64 = 1 << 1;
/// User.
const PTE_US: u64 = 1 << 2;
/// Accessed.
const PTE_A: u64 = 1 << 5;
/// Dirty.
const PTE_D: u64 = 1 << 6;
/// Bits 12..=51 of an entry: the frame address.
const PTE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Flags of L1 entries the builder writes (RW removed for page-table frames).
pub const L1_FLAGS: u64 = PTE_P | PTE_RW | PTE_A;
/// Flags of L2, L3 and L4 entries the builder writes.
pub const UPPER_FLAGS: u64 = PTE_P | PTE_RW | PTE_A | PTE_D | PTE_US;
/// L4 slots reserved for the hypervisor (256..=271); the builder leaves them zero and the
/// hypervisor fills them when it validates (pins) the L4.
pub const HYPERVISOR_L4_SLOTS: core::ops::RangeInclusive<usize> = 256..=271;

const PAGE: usize = PAGE_SIZE as usize;
static ZERO_PAGE: [u8; PAGE] = [0; PAGE];

/// Access to the memory of the domain being built.
pub trait BuildMemory {
    /// Machine frame backing guest pseudo-physical frame `pfn` (the p2m), pfn < nr_pages.
    fn mfn(&self, pfn: Pfn) -> Mfn;
    /// Copy `bytes` into guest frame `pfn` at `offset` (offset + len <= 4096).
    fn write(&mut self, pfn: Pfn, offset: usize, bytes: &[u8]);
    /// Fill guest frame `pfn` with zeroes.
    fn zero(&mut self, pfn: Pfn);
}

/// Values for start_info that the layout does not decide.
#[derive(Clone, Copy, Debug)]
pub struct StartInfoParams<'a> {
    /// Machine frame of the domain's shared_info page (start_info gets its address).
    pub shared_info: Mfn,
    /// `SIF_*` flags, e.g. `SIF_PRIVILEGED | SIF_INITDOMAIN` for dom0, 0 for a domU. The
    /// builder adds `SIF_MOD_START_PFN` itself when it passes the initrd by PFN.
    pub flags: u32,
    /// Event channel to xenstored (domUs; ignored without a xenstore page).
    pub store_evtchn: EvtchnPort,
    /// Console event channel (domUs; ignored without a console page).
    pub console_evtchn: EvtchnPort,
    /// Kernel command line; cut at the first NUL and at 1023 bytes.
    pub cmdline: &'a [u8],
    /// The initrd; must be exactly `LayoutParams::ramdisk_len` bytes.
    pub ramdisk: &'a [u8],
}

/// The result of [`build`]: how to start vCPU 0 and which frames are page tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootState {
    /// RIP: the entry point.
    pub entry: u64,
    /// RSP (and kernel_sp): the VA just past the boot stack page.
    pub stack_top: u64,
    /// RSI: VA of start_info.
    pub start_info_va: u64,
    /// The start_info frame.
    pub start_info: Pfn,
    /// The L4 frame (CR3 = `l4_mfn` << 12 once pinned).
    pub l4: Pfn,
    /// Machine frame of the L4.
    pub l4_mfn: Mfn,
    /// Every page-table frame with its level (1..=4), for the caller's frame table: the
    /// initial mapping's tables (L4, L3s, L2s, L1s), then the INIT_P2M mapping's.
    pub page_tables: Vec<(Pfn, u8)>,
    /// The hypercall page's frame, if the kernel has a HYPERCALL_PAGE note.
    pub hypercall_page: Option<Pfn>,
    /// Machine frame of the xenstore ring page (domUs).
    pub store_mfn: Option<Mfn>,
    /// Machine frame of the console ring page (domUs).
    pub console_mfn: Option<Mfn>,
}

/// Writes `bytes` at byte offset `offset` from the start of frame `base`, page by page.
fn write_at<M: BuildMemory + ?Sized>(mem: &mut M, base: Pfn, offset: u64, mut bytes: &[u8]) {
    let mut off = offset;
    while !bytes.is_empty() {
        let in_page = (off % PAGE_SIZE) as usize;
        let n = bytes.len().min(PAGE - in_page);
        let (head, tail) = bytes.split_at(n);
        mem.write(Pfn::new(base.raw() + off / PAGE_SIZE), in_page, head);
        bytes = tail;
        off += n as u64;
    }
}

/// Zeroes `len` bytes at byte offset `offset` from the start of frame `base`.
fn zero_at<M: BuildMemory + ?Sized>(mem: &mut M, base: Pfn, offset: u64, len: u64) {
    let mut off = offset;
    let end = offset + len;
    while off < end {
        let in_page = (off % PAGE_SIZE) as usize;
        let n = (end - off).min((PAGE - in_page) as u64);
        let pfn = Pfn::new(base.raw() + off / PAGE_SIZE);
        if n == PAGE_SIZE {
            mem.zero(pfn);
        } else {
            mem.write(pfn, in_page, &ZERO_PAGE[..n as usize]);
        }
        off += n;
    }
}

fn entry_for(mfn: Mfn, flags: u64) -> u64 {
    ((mfn.raw() << 12) & PTE_ADDR_MASK) | flags
}

/// Builds the domain's start-of-day memory as planned by [`plan`](crate::plan).
///
/// Every frame below `layout.alloc_end()` is zeroed first, then the kernel segments are
/// copied (bss zeroed), the hypercall page, p2m list, page tables, start_info and initrd
/// are written. Frames from `alloc_end` to `nr_pages` are not touched.
pub fn build<M: BuildMemory + ?Sized>(
    image: &KernelImage<'_>,
    layout: &Layout,
    mem: &mut M,
    params: &StartInfoParams<'_>,
) -> Result<BootState, BuildError> {
    if layout.virt_base() != image.virt_base()
        || layout.image_range() != image.virt_range()
        || layout
            .ramdisk()
            .is_some_and(|r| r.mapped == image.unmapped_initrd())
        || (layout.p2m().tables.is_some() != image.usable_init_p2m().is_some())
    {
        return Err(BuildError::LayoutMismatch);
    }
    let planned = layout.ramdisk().map_or(0, |r| r.len);
    let given = params.ramdisk.len() as u64;
    if planned != given {
        return Err(BuildError::RamdiskLengthMismatch { planned, given });
    }
    let va = |pfn: Pfn| layout.va_of(pfn).ok_or(BuildError::LayoutMismatch);

    for pfn in 0..layout.alloc_end().raw() {
        mem.zero(Pfn::new(pfn));
    }

    // Kernel segments, placed by p_paddr relative to the lowest p_paddr (libelf).
    let kernel = layout.kernel().pfn;
    let (pstart, _) = image.elf().paddr_range();
    for seg in image.elf().segments() {
        let off = seg.paddr - pstart;
        write_at(mem, kernel, off, image.elf().segment_bytes(seg));
        zero_at(
            mem,
            kernel,
            off + seg.file_size,
            seg.mem_size - seg.file_size,
        );
    }

    // Hypercall page, written over the image (XEN_DOMCTL_hypercall_init does it after
    // loading). KernelImage checked that it lies inside the image.
    let hypercall_page = image
        .hypercall_page_va()
        .map(|hva| Pfn::new((hva - layout.virt_base()) / PAGE_SIZE));
    // One heap page buffer for everything below (the hypervisor's stacks are small).
    let mut buf = vec![0u8; PAGE];
    if let Some(pfn) = hypercall_page {
        if let Ok(page) = <&mut [u8; PAGE]>::try_from(buf.as_mut_slice()) {
            fill_hypercall_page(page);
        }
        mem.write(pfn, 0, &buf);
    }

    // p2m list: one u64 MFN per PFN.
    let nr_pages = layout.nr_pages();
    let p2m = layout.p2m();
    for page in 0..p2m.list.pages {
        buf.fill(0);
        for (i, slot) in (0u64..).zip(buf.chunks_exact_mut(8)) {
            let pfn = page * 512 + i;
            if pfn >= nr_pages {
                break;
            }
            slot.copy_from_slice(&mem.mfn(Pfn::new(pfn)).raw().to_le_bytes());
        }
        mem.write(Pfn::new(p2m.list.pfn.raw() + page), 0, &buf);
    }

    // Page tables, with machine frame numbers in the entries.
    let mut page_tables = Vec::new();
    for (pfn, level, base) in layout.table_frames() {
        buf.fill(0);
        let entry_shift = 12 + 9 * (u32::from(level) - 1);
        for (i, slot) in (0u64..).zip(buf.chunks_exact_mut(8)) {
            if level == 4 && HYPERVISOR_L4_SLOTS.contains(&(i as usize)) {
                continue;
            }
            let entry_va = base + (i << entry_shift);
            let entry = if level == 1 {
                layout.leaf_pfn(entry_va).map(|p| {
                    let flags = if layout.is_page_table(p) {
                        L1_FLAGS & !PTE_RW
                    } else {
                        L1_FLAGS
                    };
                    entry_for(mem.mfn(Pfn::new(p)), flags)
                })
            } else {
                layout
                    .table_for(entry_va, level - 1)
                    .map(|p| entry_for(mem.mfn(Pfn::new(p)), UPPER_FLAGS))
            };
            if let Some(e) = entry {
                slot.copy_from_slice(&e.to_le_bytes());
            }
        }
        mem.write(Pfn::new(pfn), 0, &buf);
        page_tables.push((Pfn::new(pfn), level));
    }

    // start_info (libxc start_info_x86_64).
    let mut si = <StartInfo as FromZeros>::new_zeroed();
    for (dst, src) in si.magic.iter_mut().zip(START_INFO_MAGIC) {
        *dst = *src;
    }
    si.nr_pages = nr_pages;
    si.shared_info = params.shared_info.raw() << 12;
    si.flags = params.flags;
    let store_mfn = layout.xenstore().map(|p| mem.mfn(p));
    let console_mfn = layout.console().map(|p| mem.mfn(p));
    if let Some(mfn) = store_mfn {
        si.store_mfn = mfn.raw();
        si.store_evtchn = params.store_evtchn.raw();
    }
    if let Some(mfn) = console_mfn {
        si.set_console_domu(mfn.raw(), params.console_evtchn.raw());
    }
    let tables = layout.page_tables();
    si.pt_base = va(tables.pfn)?;
    si.nr_pt_frames = tables.pages;
    si.mfn_list = p2m.va;
    if let Some(rd) = layout.ramdisk() {
        if rd.mapped {
            si.mod_start = va(rd.region.pfn)?;
            si.mod_len = rd.len;
        } else {
            si.flags |= SIF_MOD_START_PFN;
            si.mod_start = rd.region.pfn.raw();
            si.mod_len = rd.region.pages * PAGE_SIZE;
        }
    }
    let cmdline = c_str(params.cmdline);
    for (dst, src) in si
        .cmd_line
        .iter_mut()
        .take(MAX_GUEST_CMDLINE - 1)
        .zip(cmdline)
    {
        *dst = *src;
    }
    if let Some(t) = p2m.tables {
        si.first_p2m_pfn = p2m.list.pfn.raw();
        si.nr_p2m_frames = p2m.list.pages + t.pages;
    }
    mem.write(layout.start_info(), 0, si.as_bytes());

    // Initrd.
    if let Some(rd) = layout.ramdisk() {
        write_at(mem, rd.region.pfn, 0, params.ramdisk);
    }

    let l4 = tables.pfn;
    Ok(BootState {
        entry: image.entry(),
        stack_top: va(layout.boot_stack())? + PAGE_SIZE,
        start_info_va: va(layout.start_info())?,
        start_info: layout.start_info(),
        l4,
        l4_mfn: mem.mfn(l4),
        page_tables,
        hypercall_page,
        store_mfn,
        console_mfn,
    })
}
