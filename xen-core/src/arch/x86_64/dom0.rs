//! Building dom0 from the first boot module, as Xen's dom0 builder does: parse the
//! kernel (ELF, or the ELF inside a bzImage), lay out its start-of-day memory with the
//! shared domain builder, allocate and fill its frames, record its page-table frames in
//! the frame table, validate its initial page tables, and create vCPU 0.

use super::domain::{Domain, RunState, Vcpu, HV};
use super::mm::{self, FRAMES};
use super::multiboot::{FirmwareRange, E820_RESERVED};
use super::{hypercall, pv, time};
use crate::cmdline::Options;
use alloc::string::String;
use alloc::vec::Vec;
use domain_builder::{BuildMemory, KernelImage, LayoutParams, StartInfoParams};
use xen_abi::xen::{FLAT_KERNEL_CS, FLAT_KERNEL_SS, SIF_INITDOMAIN, SIF_PRIVILEGED};
use xen_abi::{DomId, EvtchnPort, Mfn, Pfn};

const DEFAULT_DOM0_MIB: u64 = 64;

struct Dom0Memory<'a> {
    p2m: &'a [Mfn],
}

impl BuildMemory for Dom0Memory<'_> {
    fn mfn(&self, pfn: Pfn) -> Mfn {
        self.p2m
            .get(pfn.raw() as usize)
            .copied()
            .unwrap_or(Mfn::new(0))
    }
    fn write(&mut self, pfn: Pfn, offset: usize, bytes: &[u8]) {
        let Some(m) = self.p2m.get(pfn.raw() as usize) else {
            return;
        };
        if offset + bytes.len() > 4096 {
            return;
        }
        // SAFETY: the frame belongs to the domain under construction (nothing runs in it
        // yet) and is mapped by the direct map; the range stays inside it (checked above).
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                mm::maddr_to_virt((m.raw() << 12) + offset as u64),
                bytes.len(),
            )
        };
    }
    fn zero(&mut self, pfn: Pfn) {
        if let Some(&m) = self.p2m.get(pfn.raw() as usize) {
            mm::zero_frame(m);
        }
    }
}

/// Physically contiguous free frames used while building dom0: the decompressed kernel.
struct Scratch {
    first: u64,
    frames: u64,
    len: usize,
}

impl Scratch {
    /// Unpacks an xz-compressed bzImage payload, if `kernel` is one.
    fn for_kernel(kernel: &[u8]) -> Result<Option<Scratch>, String> {
        use domain_builder::bzimage::BzImage;
        use domain_builder::Compression;
        let bz = match BzImage::parse(kernel) {
            Ok(Some(bz)) if bz.compression() == Some(Compression::Xz) => bz,
            _ => return Ok(None),
        };
        let hint = bz
            .decompressed_len_hint()
            .ok_or("bzImage without a size hint")? as u64;
        let frames = (hint + (1 << 20)).div_ceil(4096);
        let first = {
            let mut f = FRAMES.lock();
            let run: Vec<u64> = (0..frames)
                .filter_map(|_| f.alloc(DomId::XEN, mm::FrameUse::Xen).map(|m| m.raw()))
                .collect();
            let contiguous = run.len() as u64 == frames && run.windows(2).all(|w| w[1] == w[0] + 1);
            if !contiguous {
                for m in run {
                    f.free(Mfn::new(m));
                }
                return Err(alloc::format!(
                    "no {} MiB of contiguous memory to unpack the kernel",
                    frames / 256
                ));
            }
            run.first().copied().unwrap_or(0)
        };
        let mut s = Scratch {
            first,
            frames,
            len: 0,
        };
        // SAFETY: the frames were just taken off the free list, are contiguous (checked)
        // and direct-mapped, and nothing else uses them until `drop`.
        let out = unsafe {
            core::slice::from_raw_parts_mut(
                mm::maddr_to_virt(first << 12),
                (frames * 4096) as usize,
            )
        };
        let (n, _) = domain_builder::xz::decompress_stream_into(bz.payload, out)
            .map_err(|e| alloc::format!("bzImage xz payload: {e}"))?;
        s.len = n;
        crate::xinfo!(
            " Dom0 kernel: bzImage, xz payload unpacked to {} bytes\n",
            n
        );
        Ok(Some(s))
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: as in `for_kernel`; `len` bytes were written by the decoder.
        unsafe { core::slice::from_raw_parts(mm::maddr_to_virt(self.first << 12), self.len) }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut f = FRAMES.lock();
        for m in self.first..self.first + self.frames {
            f.free(Mfn::new(m));
        }
    }
}

fn module_bytes(start: u64, end: u64) -> &'static [u8] {
    // SAFETY: boot modules are reserved RAM (never on the free list) mapped by the
    // direct map, and never written after boot.
    unsafe {
        core::slice::from_raw_parts(mm::maddr_to_virt(start), end.saturating_sub(start) as usize)
    }
}

/// What the hardware domain may touch, and what nobody may write.
struct HardwareResources {
    /// I/O memory it may map (inclusive frame ranges).
    iomem: Vec<(u64, u64)>,
    /// I/O memory mapped read-only by everyone (inclusive frame ranges).
    read_only: Vec<(u64, u64)>,
    /// I/O ports, `[start, end)`.
    ioports: Vec<(u32, u32)>,
}

/// The hardware domain gets what its devices and firmware need, not the whole machine
/// (Xen's `dom0_setup_permissions` grants everything but the hypervisor's devices):
/// * the memory BARs of the PCI functions the boot scan found, and their I/O BARs;
/// * the configuration ports 0xcf8..0xcff (emulated, see `pci`);
/// * firmware memory below 4 GiB: the ISA hole 0xa0000..0x100000 and the E820 reserved,
///   ACPI and NVS ranges (a Linux dom0 reads its ACPI tables there). The reserved ranges
///   are read-only, since they hold PCI's ECAM window: configuration writes through it
///   would bypass the MSI-X filter;
/// * never the IO-APIC or local APIC pages, which the hypervisor drives.
///
/// MSI-X tables and PBAs are read-only I/O memory from the start.
fn hardware_resources(firmware: &[FirmwareRange]) -> HardwareResources {
    let pci = super::pci::scan();
    let mut iomem = pci.iomem;
    let mut read_only = pci.read_only;
    iomem.push((0xa0, 0xff));
    for r in firmware
        .iter()
        .filter(|r| r.start < (1 << 32) && r.end > r.start)
    {
        let frames = (r.start >> 12, (r.end - 1).min((1 << 32) - 1) >> 12);
        iomem.push(frames);
        if r.kind == E820_RESERVED {
            read_only.push(frames);
        }
    }
    for (first, last) in [(0xfec00, 0xfecff), (0xfee00, 0xfeeff)] {
        crate::pci::punch(&mut iomem, first, last);
    }
    HardwareResources {
        iomem,
        read_only,
        ioports: pci.ioports,
    }
}

/// Builds dom0 and makes its vCPU 0 runnable.
pub fn build(
    kstart: u64,
    kend: u64,
    cmdline: &str,
    ramdisk: Option<(u64, u64)>,
    options: &Options,
    firmware: &[FirmwareRange],
) -> Result<(), String> {
    let kernel = module_bytes(kstart, kend);
    // A bzImage's xz payload (Debian's kernels, ~66 MB unpacked) is decompressed into a
    // run of free frames seen through the direct map, not the heap; the frames go back
    // to the allocator once dom0 is built.
    let scratch = Scratch::for_kernel(kernel)?;
    let elf: &[u8] = match &scratch {
        Some(s) => s.bytes(),
        None => domain_builder::bzimage::kernel_elf(kernel).map_err(|e| alloc::format!("{e}"))?,
    };
    // Linux requires `!writable_page_tables`: Xen accepts such PV kernels (it emulates
    // their page-table writes), so the builder is told the feature is offered.
    let offered = hypercall::supported_features(true)
        | (1 << xen_abi::features::XENFEAT_WRITABLE_PAGE_TABLES);
    let image = KernelImage::parse(elf, offered).map_err(|e| alloc::format!("{e}"))?;
    let ramdisk = ramdisk.map(|(s, e)| module_bytes(s, e)).unwrap_or(&[]);

    let free = FRAMES.lock().free_count();
    let want = options
        .dom0_mem_kib
        .map(|k| k / 4)
        .unwrap_or(DEFAULT_DOM0_MIB * 256);
    // Leave the hypervisor room to work (timers, tables, later domains' metadata).
    let nr_pages = want.min(free.saturating_sub(1024));
    let layout = domain_builder::plan(
        &image,
        &LayoutParams {
            nr_pages,
            ramdisk_len: ramdisk.len() as u64,
            with_store_and_console: false,
        },
    )
    .map_err(|e| alloc::format!("{e}"))?;

    let id = DomId::new(0);
    let hw = hardware_resources(firmware);
    pv::with(|pv, _| {
        pv.create_domain(id, nr_pages, 1)?;
        for &(first, last) in &hw.iomem {
            pv.permit_iomem(id, Mfn::new(first), Mfn::new(last))?;
        }
        for &(first, last) in &hw.read_only {
            pv.set_mmio_read_only(Mfn::new(first), Mfn::new(last));
        }
        Ok::<(), xen_abi::Errno>(())
    })
    .map_err(|e| alloc::format!("creating dom0: {e:?}"))?;
    let mut p2m = Vec::with_capacity(nr_pages as usize);
    for pfn in 0..nr_pages {
        let m = pv::alloc_domain_frame(id)
            .map_err(|e| alloc::format!("out of memory for dom0: {e:?}"))?;
        mm::set_m2p(m, pfn);
        p2m.push(m);
    }
    let shared_info = pv::alloc_xen_frame().map_err(|e| alloc::format!("shared_info: {e:?}"))?;
    pv::with(|pv, _| pv.share_xen_page(shared_info, id, true))
        .map_err(|e| alloc::format!("shared_info: {e:?}"))?;
    let mut mem = Dom0Memory { p2m: &p2m };
    let boot = domain_builder::build(
        &image,
        &layout,
        &mut mem,
        &StartInfoParams {
            shared_info,
            flags: SIF_PRIVILEGED | SIF_INITDOMAIN,
            store_evtchn: EvtchnPort::new(0),
            console_evtchn: EvtchnPort::new(0),
            cmdline: cmdline.as_bytes(),
            ramdisk,
        },
    )
    .map_err(|e| alloc::format!("{e}"))?;

    crate::xinfo!("*** Building a PV Dom0 ***\n");
    crate::xinfo!(
        " Dom0 kernel: {} bytes, entry {:#x}, {} pages ({} MiB)\n",
        kernel.len(),
        boot.entry,
        nr_pages,
        nr_pages / 256
    );
    crate::xinfo!(
        " Start info {:#x}, stack top {:#x}, {} page-table frames\n",
        boot.start_info_va,
        boot.stack_top,
        boot.page_tables.len()
    );

    // As Xen's builders do: pin the initial L4 (which validates the whole tree, gives
    // every table its type and fills the hypervisor's L4 slots) and make it vCPU 0's CR3.
    pv::with(|pv, mem| {
        pv.pin(mem, id, boot.l4_mfn, 4)?;
        pv.new_baseptr(mem, id, 0, boot.l4_mfn).map(|_| ())
    })
    .map_err(|e| alloc::format!("the initial page tables do not validate: {e:?}"))?;

    let mut evtchn = crate::evtchn::EventChannels::new(id, 1)
        .map_err(|e| alloc::format!("event channels: {e:?}"))?;
    evtchn.set_hardware_domain();
    let mut v = Vcpu::new(0, shared_info, boot.l4_mfn);
    v.regs.rip = boot.entry;
    v.regs.rsp = boot.stack_top;
    v.regs.rsi = boot.start_info_va;
    v.regs.cs = u64::from(FLAT_KERNEL_CS);
    v.regs.ss = u64::from(FLAT_KERNEL_SS);
    v.regs.rflags = 0x202;
    v.kernel_sp = boot.stack_top;
    v.state = RunState::Runnable;
    let d = Domain {
        id,
        vcpus: alloc::vec![v],
        shared_info,
        evtchn,
        p2m,
        max_pages: nr_pages,
        privileged: true,
        shutdown: None,
        shutdown_code: None,
        vm_assist: 0,
        paused: false,
        ioports: hw.ioports,
        pci_cf8: 0,
        irqs: Vec::new(),
        grant: grant::GrantTable::new(grant::DEFAULT_MAX_FRAMES),
        grant_entries: Default::default(),
        maptrack: grant::MapTrack::new(super::granthc::MAPTRACK_LIMIT),
        pirqs: crate::pirq::PirqTable::new(crate::pirq::HWDOM_NR_PIRQS),
    };
    d.mask_all_upcalls();
    d.vcpus[0].update_time();
    let wall = time::wallclock_at_boot();
    d.update_wallclock(wall, 0);
    HV.lock().domains.push(d);
    Ok(())
}
