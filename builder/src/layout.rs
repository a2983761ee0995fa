//! The start-of-day memory layout of a PV domain (ABI.md 1.3; Xen `xen.h` "Start-of-day
//! memory layout"), computed in libxc's order (`xc_dom_build_image`, `alloc_pgtables_pv`,
//! `count_pgtables`, `alloc_p2m_list_x86_64` in `tools/libs/guest/`).
//!
//! Guest frames are handed out from PFN 0 upwards; PFN *n* is mapped at `VIRT_BASE + n *
//! 4096` by the initial page tables. In order:
//!
//! 1. padding from VIRT_BASE to the image;
//! 2. the kernel image;
//! 3. the initrd (if the kernel lacks MOD_START_PFN);
//! 4. the p2m list (if there is no usable INIT_P2M);
//! 5. start_info;
//! 6. xenstore and 7. console pages (domUs only);
//! 8. the page tables (L4, L3s, L2s, L1s);
//! 9. the boot stack;
//! 10. padding so the initial mapping ends on a 4 MiB boundary with at least 512 KiB to
//!     spare;
//!
//! then, outside the initial mapping:
//!
//! 11. the initrd (MOD_START_PFN case);
//! 12. the p2m list followed by the page tables that map it at the INIT_P2M address.
//!
//! The number of page tables depends on how far the mapping reaches, which depends on the
//! number of page tables; like libxc, [`plan`] iterates until the count is stable.
//!
//! Page-table arithmetic works, like libxc's, on the low 48 bits of a virtual address (the
//! bits the four levels translate).

use xen_abi::xen::{HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START};
use xen_abi::Pfn;

use crate::bytes::pages_for;
use crate::{BuildError, KernelImage, PAGE_SIZE};

/// The 48 bits of a virtual address that paging translates.
const VA_MASK: u64 = (1 << 48) - 1;
/// Boot stack page plus 512 KiB of slack that must fit in the initial mapping
/// (libxc `alloc_pgtables_pv`).
const EXTRA_PAGES: u64 = 1 + (512 * 1024) / PAGE_SIZE;
/// The initial mapping ends on a 4 MiB boundary.
const MAPPING_ALIGN_MASK: u64 = (4 << 20) - 1;
/// Lowest non-canonical address.
const NON_CANONICAL_START: u64 = 1 << 47;
/// Lowest canonical address of the upper half.
const UPPER_HALF_START: u64 = 0xffff_8000_0000_0000;
/// The page-table iteration converges in two or three rounds; this bounds pathological
/// inputs.
const MAX_ROUNDS: u32 = 64;

/// What the caller knows about the domain when planning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutParams {
    /// RAM pages of the domain (`start_info.nr_pages`; every PFN below it is backed).
    pub nr_pages: u64,
    /// Length of the initrd in bytes (0: no initrd).
    pub ramdisk_len: u64,
    /// Allocate xenstore and console ring pages (domUs; dom0 has neither).
    pub with_store_and_console: bool,
}

/// A run of consecutive guest frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First frame.
    pub pfn: Pfn,
    /// Number of frames.
    pub pages: u64,
}

impl Region {
    /// One past the last frame.
    pub fn end(&self) -> Pfn {
        Pfn::new(self.pfn.raw().saturating_add(self.pages))
    }

    /// Whether `pfn` is in the region.
    pub fn contains(&self, pfn: Pfn) -> bool {
        pfn >= self.pfn && pfn < self.end()
    }
}

/// Where the initrd goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ramdisk {
    /// Its frames.
    pub region: Region,
    /// Its length in bytes.
    pub len: u64,
    /// Inside the initial mapping (`mod_start` = VA) or not (`mod_start` = PFN,
    /// `SIF_MOD_START_PFN`).
    pub mapped: bool,
}

/// Where the p2m list (u64 MFN per PFN) goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct P2mPlacement {
    /// The list's frames.
    pub list: Region,
    /// VA of the list (`start_info.mfn_list`).
    pub va: u64,
    /// Page tables mapping the list at INIT_P2M (only when INIT_P2M is used): L3s, L2s,
    /// L1s as needed, right after the list.
    pub tables: Option<Region>,
}

/// Page tables of one level needed by one mapping: `count` tables covering `[from, to]`
/// (48-bit VAs), in frames `first_pfn..first_pfn + count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TableSpan {
    from: u64,
    to: u64,
    count: u64,
    first_pfn: u64,
}

impl TableSpan {
    const EMPTY: TableSpan = TableSpan {
        from: 0,
        to: 0,
        count: 0,
        first_pfn: 0,
    };

    /// The table of this span translating `va` (48-bit), if any.
    fn table_for(&self, va: u64, level: u8) -> Option<u64> {
        (self.count > 0 && (self.from..=self.to).contains(&va))
            .then(|| self.first_pfn + ((va - self.from) >> table_shift(level)))
    }
}

/// log2 of the VA range one page table of `level` (1..=4) covers.
fn table_shift(level: u8) -> u32 {
    12 + 9 * u32::from(level)
}

/// A contiguous range of VAs mapped to consecutive PFNs, and the page tables it needs
/// beyond those of mappings made before it (libxc's `xc_dom_x86_mapping`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapping {
    /// First and last mapped 48-bit VA.
    from: u64,
    to: u64,
    /// PFN mapped at `from`.
    first_pfn: u64,
    /// Tables per level: index 0 = L1 tables ... 3 = L4.
    spans: [TableSpan; 4],
    /// All of this mapping's table frames (top level first).
    tables: Region,
}

impl Mapping {
    /// Counts the tables needed to map `[from, last]` (real VAs) at `first_pfn`, not
    /// counting tables an earlier mapping `prev` already provides; the tables get frames
    /// from `first_table_pfn` on, top level first. Only the first mapping has an L4.
    fn new(
        from: u64,
        last: u64,
        first_pfn: u64,
        prev: Option<&Mapping>,
        first_table_pfn: u64,
    ) -> Result<Mapping, BuildError> {
        let from = from & VA_MASK;
        let to = last & VA_MASK;
        let mut spans = [TableSpan::EMPTY; 4];
        let mut n = 0u64;
        if prev.is_none() {
            spans[3] = TableSpan {
                from: 0,
                to: VA_MASK,
                count: 1,
                first_pfn: first_table_pfn,
            };
            n = 1;
        }
        for level in (1u8..=3).rev() {
            let mask = (1u64 << table_shift(level)) - 1;
            let mut s = from & !mask;
            let mut e = to | mask;
            let mut shared = false;
            if let Some(p) = prev.map(|p| p.spans[usize::from(level - 1)]) {
                if p.count > 0 {
                    if s >= p.from && e <= p.to {
                        shared = true;
                    } else if s < p.from && e > p.to {
                        // Cannot happen for the p2m mapping, which lies below the first one.
                        return Err(BuildError::OverlappingMappings);
                    } else {
                        if (p.from..=p.to).contains(&s) {
                            s = p.to + 1;
                        }
                        if (p.from..=p.to).contains(&e) {
                            e = p
                                .from
                                .checked_sub(1)
                                .ok_or(BuildError::OverlappingMappings)?;
                        }
                    }
                }
            }
            let count = if shared || s > e {
                0
            } else {
                ((e - s) >> table_shift(level)) + 1
            };
            spans[usize::from(level - 1)] = TableSpan {
                from: s,
                to: e,
                count,
                first_pfn: first_table_pfn
                    .checked_add(n)
                    .ok_or(BuildError::AddressOverflow)?,
            };
            n += count;
        }
        Ok(Mapping {
            from,
            to,
            first_pfn,
            spans,
            tables: Region {
                pfn: Pfn::new(first_table_pfn),
                pages: n,
            },
        })
    }
}

/// The planned layout. Built only by [`plan`]; read it through the accessors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    nr_pages: u64,
    virt_base: u64,
    image_range: (u64, u64),
    kernel: Region,
    ramdisk: Option<Ramdisk>,
    p2m: P2mPlacement,
    start_info: Pfn,
    xenstore: Option<Pfn>,
    console: Option<Pfn>,
    boot_stack: Pfn,
    mapping_end: u64,
    alloc_end: Pfn,
    initial: Mapping,
    p2m_mapping: Option<Mapping>,
}

/// Checks that `[start, last]` is canonical, does not straddle the non-canonical hole, and
/// stays out of the hypervisor's range (L4 slots 256..=271).
fn check_va_range(start: u64, last: u64) -> Result<(), BuildError> {
    let canonical = |va: u64| !(NON_CANONICAL_START..UPPER_HALF_START).contains(&va);
    if !canonical(start) {
        return Err(BuildError::NonCanonicalAddress { va: start });
    }
    if start > last
        || !canonical(last)
        || (start < NON_CANONICAL_START) != (last < NON_CANONICAL_START)
    {
        return Err(BuildError::NonCanonicalAddress {
            va: NON_CANONICAL_START.max(start),
        });
    }
    if start < HYPERVISOR_VIRT_END && last >= HYPERVISOR_VIRT_START {
        return Err(BuildError::InHypervisorArea {
            va: start.max(HYPERVISOR_VIRT_START),
        });
    }
    Ok(())
}

/// Hands out `pages` frames at `*next`.
fn take(next: &mut u64, pages: u64) -> Result<Region, BuildError> {
    let region = Region {
        pfn: Pfn::new(*next),
        pages,
    };
    *next = next.checked_add(pages).ok_or(BuildError::AddressOverflow)?;
    Ok(region)
}

/// Plans the layout of a domain of `params.nr_pages` pages for `image`.
pub fn plan(image: &KernelImage<'_>, params: &LayoutParams) -> Result<Layout, BuildError> {
    let overflow = BuildError::AddressOverflow;
    let nr_pages = params.nr_pages;
    let virt_base = image.virt_base();
    let (kstart, kend) = image.virt_range();
    let va_of = |pfn: u64| {
        pfn.checked_mul(PAGE_SIZE)
            .and_then(|off| virt_base.checked_add(off))
            .ok_or(overflow)
    };

    // 1-2: padding, then the image at its own address (KernelImage checked the alignment
    // and virt_base <= kstart <= kend).
    let mut next = (kstart - virt_base) / PAGE_SIZE;
    let kernel = take(&mut next, pages_for(kend - kstart).ok_or(overflow)?)?;

    // 3: initrd inside the mapping unless the kernel takes it by PFN.
    let ramdisk_pages = pages_for(params.ramdisk_len).ok_or(overflow)?;
    let unmapped_initrd = image.unmapped_initrd();
    let mut ramdisk = None;
    if params.ramdisk_len > 0 && !unmapped_initrd {
        ramdisk = Some(Ramdisk {
            region: take(&mut next, ramdisk_pages)?,
            len: params.ramdisk_len,
            mapped: true,
        });
    }

    // 4: p2m list inside the mapping unless INIT_P2M is usable.
    let list_pages = pages_for(nr_pages.checked_mul(8).ok_or(overflow)?).ok_or(overflow)?;
    let init_p2m = image.usable_init_p2m();
    let mapped_list = match init_p2m {
        None => Some(take(&mut next, list_pages)?),
        Some(_) => None,
    };

    // 5-7: start_info, xenstore, console.
    let start_info = take(&mut next, 1)?.pfn;
    let (xenstore, console) = if params.with_store_and_console {
        (Some(take(&mut next, 1)?.pfn), Some(take(&mut next, 1)?.pfn))
    } else {
        (None, None)
    };

    // 8-10: page tables covering everything up to a 4 MiB boundary that leaves room for
    // the tables themselves, the boot stack and 512 KiB of slack.
    let alloc_va = va_of(next)?;
    let mut pages = EXTRA_PAGES;
    let mut rounds = 0;
    let (initial, last) = loop {
        let bytes = pages.checked_mul(PAGE_SIZE).ok_or(overflow)?;
        let last = alloc_va.checked_add(bytes).ok_or(overflow)? | MAPPING_ALIGN_MASK;
        check_va_range(virt_base, last)?;
        let m = Mapping::new(virt_base, last, 0, None, next)?;
        pages = m.tables.pages.checked_add(EXTRA_PAGES).ok_or(overflow)?;
        let needed_end = alloc_va
            .checked_add(pages.checked_mul(PAGE_SIZE).ok_or(overflow)?)
            .ok_or(overflow)?;
        if needed_end <= last.checked_add(1).ok_or(overflow)? {
            break (m, last);
        }
        rounds += 1;
        if rounds > MAX_ROUNDS {
            return Err(overflow);
        }
    };
    take(&mut next, initial.tables.pages)?;
    let boot_stack = take(&mut next, 1)?.pfn;
    let mapping_end = last + 1;
    // The loop guarantees this is at or beyond `next`.
    next = (mapping_end - virt_base) / PAGE_SIZE;

    // 11: unmapped initrd.
    if params.ramdisk_len > 0 && unmapped_initrd {
        ramdisk = Some(Ramdisk {
            region: take(&mut next, ramdisk_pages)?,
            len: params.ramdisk_len,
            mapped: false,
        });
    }

    // 12: p2m list at INIT_P2M, followed by its own page tables.
    let (p2m, p2m_mapping) = match (init_p2m, mapped_list) {
        (Some(p2m_va), _) => {
            let list = take(&mut next, list_pages)?;
            let len = list_pages.max(1).checked_mul(PAGE_SIZE).ok_or(overflow)?;
            let p2m_last = p2m_va.checked_add(len - 1).ok_or(overflow)?;
            check_va_range(p2m_va, p2m_last)?;
            if p2m_last >= virt_base {
                return Err(BuildError::OverlappingMappings);
            }
            let m = Mapping::new(p2m_va, p2m_last, list.pfn.raw(), Some(&initial), next)?;
            let tables = take(&mut next, m.tables.pages)?;
            (
                P2mPlacement {
                    list,
                    va: p2m_va,
                    tables: Some(tables),
                },
                Some(m),
            )
        }
        (None, Some(list)) => (
            P2mPlacement {
                list,
                va: va_of(list.pfn.raw())?,
                tables: None,
            },
            None,
        ),
        (None, None) => return Err(overflow),
    };

    if next > nr_pages {
        return Err(BuildError::NotEnoughMemory {
            needed: next,
            available: nr_pages,
        });
    }

    Ok(Layout {
        nr_pages,
        virt_base,
        image_range: (kstart, kend),
        kernel,
        ramdisk,
        p2m,
        start_info,
        xenstore,
        console,
        boot_stack,
        mapping_end,
        alloc_end: Pfn::new(next),
        initial,
        p2m_mapping,
    })
}

impl Layout {
    /// RAM pages of the domain.
    pub fn nr_pages(&self) -> u64 {
        self.nr_pages
    }

    /// VIRT_BASE: VA of PFN 0.
    pub fn virt_base(&self) -> u64 {
        self.virt_base
    }

    /// `[virt_kstart, virt_kend)` of the image this layout was planned for.
    pub fn image_range(&self) -> (u64, u64) {
        self.image_range
    }

    /// The kernel image's frames.
    pub fn kernel(&self) -> Region {
        self.kernel
    }

    /// The initrd, if any.
    pub fn ramdisk(&self) -> Option<Ramdisk> {
        self.ramdisk
    }

    /// The p2m list.
    pub fn p2m(&self) -> P2mPlacement {
        self.p2m
    }

    /// The start_info page.
    pub fn start_info(&self) -> Pfn {
        self.start_info
    }

    /// The xenstore ring page (domUs).
    pub fn xenstore(&self) -> Option<Pfn> {
        self.xenstore
    }

    /// The console ring page (domUs).
    pub fn console(&self) -> Option<Pfn> {
        self.console
    }

    /// The initial mapping's page tables (L4 first, then L3s, L2s, L1s); `pt_base` is the
    /// VA of the first, `nr_pt_frames` their count.
    pub fn page_tables(&self) -> Region {
        self.initial.tables
    }

    /// The boot stack page.
    pub fn boot_stack(&self) -> Pfn {
        self.boot_stack
    }

    /// VA one past the end of the initial mapping (4 MiB aligned).
    pub fn mapping_end(&self) -> u64 {
        self.mapping_end
    }

    /// First PFN the layout does not use; frames from here to `nr_pages` are free RAM.
    pub fn alloc_end(&self) -> Pfn {
        self.alloc_end
    }

    /// VA of `pfn` if the initial mapping maps it.
    pub fn va_of(&self, pfn: Pfn) -> Option<u64> {
        let va = pfn
            .raw()
            .checked_mul(PAGE_SIZE)
            .and_then(|off| self.virt_base.checked_add(off))?;
        (va < self.mapping_end).then_some(va)
    }

    /// The mappings, initial one first.
    fn mappings(&self) -> impl Iterator<Item = &Mapping> {
        core::iter::once(&self.initial).chain(self.p2m_mapping.as_ref())
    }

    /// The PFN mapped at 48-bit VA `va`, if any.
    pub(crate) fn leaf_pfn(&self, va: u64) -> Option<u64> {
        self.mappings()
            .find(|m| (m.from..=m.to).contains(&va))
            .map(|m| m.first_pfn + ((va - m.from) >> 12))
    }

    /// The page table of `level` (1..=3) that translates 48-bit VA `va`, if any.
    pub(crate) fn table_for(&self, va: u64, level: u8) -> Option<u64> {
        self.mappings()
            .find_map(|m| m.spans[usize::from(level - 1)].table_for(va, level))
    }

    /// Whether `pfn` holds a page table (of either mapping).
    pub(crate) fn is_page_table(&self, pfn: u64) -> bool {
        self.mappings().any(|m| m.tables.contains(Pfn::new(pfn)))
    }

    /// Every page-table frame as `(pfn, level, first 48-bit VA it translates)`, in frame
    /// order.
    pub(crate) fn table_frames(&self) -> impl Iterator<Item = (u64, u8, u64)> + '_ {
        self.mappings().flat_map(|m| {
            (1u8..=4).rev().flat_map(move |level| {
                let span = m.spans[usize::from(level - 1)];
                (0..span.count).map(move |k| {
                    let base = if level == 4 {
                        0
                    } else {
                        span.from + (k << table_shift(level))
                    };
                    (span.first_pfn + k, level, base)
                })
            })
        })
    }
}
