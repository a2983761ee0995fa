//! dom0's disks: the hardware side of its native virtio-blk driver and the registry that
//! hands disks to their users (blkback or dom0's own `disk` tools), as Linux's dom0 owns
//! the real block devices that `xen-blkback` exports.
//!
//! * PCI configuration space through mechanism #1 (ports 0xcf8/0xcfc: dom0 raises its
//!   virtual IOPL with `PHYSDEVOP_set_iopl`; each `in`/`out` then traps and the hypervisor
//!   performs it, Xen's `emulate_privileged_op`), or, if the address register does not
//!   read back, through ECAM (MMCONFIG) located with ACPI's MCFG table.
//! * BARs mapped uncached (PCD|PWT) into map-area slots with `update_va_mapping`: the
//!   hardware domain may map I/O memory.
//! * Rings, request pages and data buffers in dom0 frames; the device gets their machine
//!   addresses (no IOMMU: bus address = machine address).
//! * Interrupts: MSI-X table entry 0 bound to a pirq (`PHYSDEVOP_map_pirq`) and an event
//!   channel (`EVTCHNOP_bind_pirq`) whose handler only counts: the interrupt wakes dom0 from
//!   `SCHEDOP_block`, completions are reaped in `complete()`. If the hypervisor refuses,
//!   the driver polls (and says so once).
//!
//! Disks are named `vda`, `vdb`, ... in PCI enumeration order.
#![allow(unsafe_code)] // port I/O, MMIO and DMA pages

extern crate alloc;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicU64, Ordering};

use blkback::{BlockDevice, BlockOp, DeviceRequest, DeviceStatus, DiskInfo, DmaSegment};
use dom0::pci::{self, Bar, Bdf, ConfigSpace, Function};
use dom0::virtio::blk::{Page, VirtioBlk};
use dom0::virtio::{self, Mmio, Region, Transport};
use dom0::{Host, Outcome};
use pv_guest::arch::mmu;
use pv_guest::mm::{pte, Pool};
use pv_guest::{println, time};
use ring::{Fence, RingMemory};
use spin::Mutex;

// ---------------------------------------------------------------------------------------
// Hardware access.

/// `PHYSDEVOP_set_iopl(1)`: lets dom0's kernel execute `in`/`out` (trapped and performed by
/// the hypervisor).
fn set_iopl() -> Result<(), pv_guest::hypercall::Error> {
    pv_guest::hypercall::physdev_set_iopl(1)
}

fn outl(port: u16, v: u32) {
    // SAFETY: a port write; with the virtual IOPL raised the hypervisor emulates it (only
    // PCI configuration ports are used here). No memory is touched.
    unsafe { core::arch::asm!("out dx, eax", in("dx") port, in("eax") v, options(nostack, nomem)) }
}

fn outw(port: u16, v: u16) {
    // SAFETY: as `outl`.
    unsafe { core::arch::asm!("out dx, ax", in("dx") port, in("ax") v, options(nostack, nomem)) }
}

fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: as `outl`.
    unsafe { core::arch::asm!("in eax, dx", in("dx") port, out("eax") v, options(nostack, nomem)) }
    v
}

/// PCI configuration mechanism #1.
struct PortConfig;

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;

fn config_address(bdf: Bdf, offset: u8) -> u32 {
    0x8000_0000
        | (u32::from(bdf.bus) << 16)
        | (u32::from(bdf.dev) << 11)
        | (u32::from(bdf.func) << 8)
        | u32::from(offset & 0xfc)
}

impl ConfigSpace for PortConfig {
    fn read32(&mut self, bdf: Bdf, offset: u8) -> u32 {
        outl(CONFIG_ADDRESS, config_address(bdf, offset));
        inl(CONFIG_DATA)
    }
    fn write32(&mut self, bdf: Bdf, offset: u8, value: u32) {
        outl(CONFIG_ADDRESS, config_address(bdf, offset));
        outl(CONFIG_DATA, value);
    }
    fn write16(&mut self, bdf: Bdf, offset: u8, value: u16) {
        outl(CONFIG_ADDRESS, config_address(bdf, offset));
        outw(CONFIG_DATA + u16::from(offset & 2), value);
    }
}

/// PCI Express enhanced configuration access (ECAM/MMCONFIG): each function's 4 KiB of
/// configuration space is a page of MMIO at `base + (bus << 20 | dev << 15 | func << 12)`.
/// One map-area slot is re-pointed at whichever function is being accessed.
struct Ecam {
    base: u64,
    start_bus: u8,
    end_bus: u8,
    slot: usize,
    current: Option<Bdf>,
}

impl Ecam {
    /// The VA of `bdf`'s configuration page, or `None` if it is outside the ECAM range or
    /// cannot be mapped.
    fn page(&mut self, bdf: Bdf) -> Option<u64> {
        if bdf.bus < self.start_bus || bdf.bus > self.end_bus {
            return None;
        }
        if self.current != Some(bdf) {
            let addr = self.base
                + (u64::from(bdf.bus - self.start_bus) << 20)
                + (u64::from(bdf.dev) << 15)
                + (u64::from(bdf.func) << 12);
            let val = addr | pte::KERNEL_RW | pte::PCD | pte::PWT | pte::NX;
            if mmu::update_slot(self.slot, val, pv_guest::xen_abi::xen::UVMF_INVLPG).is_err() {
                self.current = None;
                return None;
            }
            self.current = Some(bdf);
        }
        Some(mmu::slot_va(self.slot))
    }
}

impl ConfigSpace for Ecam {
    fn read32(&mut self, bdf: Bdf, offset: u8) -> u32 {
        match self.page(bdf) {
            // SAFETY: the slot maps `bdf`'s configuration page uncached (just checked);
            // aligned dword inside it; volatile device access.
            Some(va) => unsafe {
                core::ptr::read_volatile((va + u64::from(offset & 0xfc)) as *const u32)
            },
            None => u32::MAX,
        }
    }
    fn write32(&mut self, bdf: Bdf, offset: u8, value: u32) {
        if let Some(va) = self.page(bdf) {
            // SAFETY: as `read32`.
            unsafe { core::ptr::write_volatile((va + u64::from(offset & 0xfc)) as *mut u32, value) }
        }
    }
    fn write16(&mut self, bdf: Bdf, offset: u8, value: u16) {
        if let Some(va) = self.page(bdf) {
            // SAFETY: as `read32` (aligned word).
            unsafe { core::ptr::write_volatile((va + u64::from(offset & 0xfe)) as *mut u16, value) }
        }
    }
}

/// Reads machine memory (firmware tables) through temporary read-only mappings.
fn phys_read(addr: u64, buf: &mut [u8]) -> bool {
    let mut done = 0usize;
    while done < buf.len() {
        let a = addr + done as u64;
        let Ok(m) = mmu::map(a >> 12, false) else {
            return false;
        };
        let off = (a & 0xfff) as usize;
        let n = (4096 - off).min(buf.len() - done);
        for i in 0..n {
            let w = m.read((off + i) / 8);
            buf[done + i] = w.to_le_bytes()[(off + i) % 8];
        }
        let _ = mmu::unmap(m);
        done += n;
    }
    true
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

/// Finds the ECAM window in ACPI's MCFG table (RSDP in the BIOS area → RSDT/XSDT → MCFG):
/// `(base, start bus, end bus)` of segment 0.
fn find_mcfg() -> Option<(u64, u8, u8)> {
    let mut bios = alloc::vec![0u8; 0x20000];
    if !phys_read(0xe0000, &mut bios) {
        return None;
    }
    let rsdp = (0..bios.len() - 36)
        .step_by(16)
        .find(|&o| &bios[o..o + 8] == b"RSD PTR ")?;
    let rev = bios[rsdp + 15];
    let (root, entry) = if rev >= 2 && le64(&bios, rsdp + 24) != 0 {
        (le64(&bios, rsdp + 24), 8)
    } else {
        (u64::from(le32(&bios, rsdp + 16)), 4)
    };
    let mut hdr = [0u8; 36];
    if !phys_read(root, &mut hdr) {
        return None;
    }
    let len = (le32(&hdr, 4) as usize).clamp(36, 4096);
    let mut table = alloc::vec![0u8; len];
    if !phys_read(root, &mut table) {
        return None;
    }
    for at in (36..len).step_by(entry) {
        let t = if entry == 8 {
            le64(&table, at)
        } else {
            u64::from(le32(&table, at))
        };
        let mut h = [0u8; 36];
        if t == 0 || !phys_read(t, &mut h) || &h[0..4] != b"MCFG" {
            continue;
        }
        let mut m = [0u8; 60];
        if !phys_read(t, &mut m) {
            return None;
        }
        // Header, 8 reserved bytes, then { base u64, segment u16, start bus, end bus, 4 }.
        let base = le64(&m, 44);
        let segment = u16::from_le_bytes([m[52], m[53]]);
        if segment == 0 && base != 0 {
            return Some((base, m[54], m[55]));
        }
    }
    None
}

/// How dom0 reaches configuration space.
enum Access {
    Ports(PortConfig),
    Ecam(Ecam),
}

impl ConfigSpace for Access {
    fn read32(&mut self, bdf: Bdf, offset: u8) -> u32 {
        match self {
            Access::Ports(p) => p.read32(bdf, offset),
            Access::Ecam(e) => e.read32(bdf, offset),
        }
    }
    fn write32(&mut self, bdf: Bdf, offset: u8, value: u32) {
        match self {
            Access::Ports(p) => p.write32(bdf, offset, value),
            Access::Ecam(e) => e.write32(bdf, offset, value),
        }
    }
    fn write16(&mut self, bdf: Bdf, offset: u8, value: u16) {
        match self {
            Access::Ports(p) => p.write16(bdf, offset, value),
            Access::Ecam(e) => e.write16(bdf, offset, value),
        }
    }
}

static ACCESS: Mutex<Option<Access>> = Mutex::new(None);

/// Picks the configuration access method once: ports 0xcf8/0xcfc if the address register
/// reads back what we wrote (it does on hardware and under Xen), else ECAM from ACPI.
fn choose_access() -> Result<Access, String> {
    let ports = match set_iopl() {
        Ok(()) => {
            outl(CONFIG_ADDRESS, 0x8000_0000);
            inl(CONFIG_ADDRESS) == 0x8000_0000
        }
        Err(_) => false,
    };
    if ports {
        return Ok(Access::Ports(PortConfig));
    }
    let (base, start_bus, end_bus) =
        find_mcfg().ok_or_else(|| String::from("ports 0xcf8/0xcfc unusable and no ACPI MCFG"))?;
    let slot = mmu::reserve_slots(1).map_err(|e| format!("map area: {e}"))?;
    println!(
        "dom0: pci: 0xcf8/0xcfc unusable; ECAM at {base:#x} buses {start_bus:#x}-{end_bus:#x}"
    );
    Ok(Access::Ecam(Ecam {
        base,
        start_bus,
        end_bus,
        slot,
        current: None,
    }))
}

/// Runs `f` with configuration-space access.
fn with_config<T>(f: impl FnOnce(&mut Access) -> T) -> Result<T, String> {
    let mut a = ACCESS.lock();
    if a.is_none() {
        *a = Some(choose_access()?);
    }
    match a.as_mut() {
        Some(acc) => Ok(f(acc)),
        None => Err(String::from("no configuration access")),
    }
}

/// A BAR region mapped uncached in the map area.
struct MmioWindow {
    va: u64,
    len: usize,
}

impl MmioWindow {
    fn ok(&self, offset: usize, width: usize) -> bool {
        offset.checked_add(width).is_some_and(|e| e <= self.len) && offset.is_multiple_of(width)
    }
}

// SAFETY (for every access below): `va..va+len` is an uncached mapping of the device's BAR
// made by `map_region` and never unmapped while the window exists; accesses are bounds-
// and alignment-checked by `ok` and volatile (device registers), no reference is formed.
impl Mmio for MmioWindow {
    fn len(&self) -> usize {
        self.len
    }
    fn read8(&self, o: usize) -> u8 {
        if !self.ok(o, 1) {
            return u8::MAX;
        }
        // SAFETY: see the impl comment.
        unsafe { core::ptr::read_volatile((self.va + o as u64) as *const u8) }
    }
    fn read16(&self, o: usize) -> u16 {
        if !self.ok(o, 2) {
            return u16::MAX;
        }
        // SAFETY: see the impl comment.
        unsafe { core::ptr::read_volatile((self.va + o as u64) as *const u16) }
    }
    fn read32(&self, o: usize) -> u32 {
        if !self.ok(o, 4) {
            return u32::MAX;
        }
        // SAFETY: see the impl comment.
        unsafe { core::ptr::read_volatile((self.va + o as u64) as *const u32) }
    }
    fn write8(&self, o: usize, v: u8) {
        if self.ok(o, 1) {
            // SAFETY: see the impl comment.
            unsafe { core::ptr::write_volatile((self.va + o as u64) as *mut u8, v) }
        }
    }
    fn write16(&self, o: usize, v: u16) {
        if self.ok(o, 2) {
            // SAFETY: see the impl comment.
            unsafe { core::ptr::write_volatile((self.va + o as u64) as *mut u16, v) }
        }
    }
    fn write32(&self, o: usize, v: u32) {
        if self.ok(o, 4) {
            // SAFETY: see the impl comment.
            unsafe { core::ptr::write_volatile((self.va + o as u64) as *mut u32, v) }
        }
    }
}

/// Most pages one mapped region may span (QEMU's are one page each).
const MAX_REGION_PAGES: u64 = 4;

/// Maps `r` of function `f` uncached; at most `cap` bytes of it.
fn map_region(f: &Function, r: Region, cap: usize) -> Result<MmioWindow, virtio::Error> {
    let Some(Bar::Mem { addr, .. }) = f.bars.get(usize::from(r.bar)).copied() else {
        return Err(virtio::Error::Map);
    };
    let len = (r.length as usize).min(cap);
    let start = addr + u64::from(r.offset);
    let first = start >> 12;
    let last = (start + len as u64 - 1) >> 12;
    let n = last - first + 1;
    if n > MAX_REGION_PAGES {
        return Err(virtio::Error::Map);
    }
    let slot = mmu::reserve_slots(n as usize).map_err(|_| virtio::Error::Map)?;
    for i in 0..n {
        let val = ((first + i) << 12) | pte::KERNEL_RW | pte::PCD | pte::PWT | pte::NX;
        let flags = pv_guest::xen_abi::xen::UVMF_INVLPG;
        if mmu::update_slot(slot + i as usize, val, flags).is_err() {
            for j in 0..i {
                let _ = mmu::update_slot(slot + j as usize, 0, flags);
            }
            mmu::release_slots(slot, n as usize);
            return Err(virtio::Error::Map);
        }
    }
    Ok(MmioWindow {
        va: mmu::slot_va(slot) + (start & 0xfff),
        len,
    })
}

/// A dom0 frame shared with a device (ring, request page or data buffer): kept for the
/// device's lifetime.
struct DmaPage {
    va: u64,
}

// SAFETY (for every access below): `va` is the RW initial mapping of a frame this module
// took from the allocator and never frees while a device may use it; offsets are checked
// against the page; the device writes concurrently, hence volatile, no reference.
impl RingMemory for DmaPage {
    fn len(&self) -> usize {
        4096
    }
    fn load_u32(&self, offset: usize) -> u32 {
        let o = (offset & !3).min(4092);
        // SAFETY: see the impl comment.
        unsafe { core::ptr::read_volatile((self.va + o as u64) as *const u32) }
    }
    fn store_u32(&self, offset: usize, value: u32) {
        let o = (offset & !3).min(4092);
        // SAFETY: see the impl comment.
        unsafe { core::ptr::write_volatile((self.va + o as u64) as *mut u32, value) }
    }
    fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        if offset.saturating_add(dst.len()) > 4096 {
            return;
        }
        for (i, b) in dst.iter_mut().enumerate() {
            // SAFETY: see the impl comment.
            *b = unsafe { core::ptr::read_volatile((self.va + (offset + i) as u64) as *const u8) };
        }
    }
    fn write_bytes(&self, offset: usize, src: &[u8]) {
        if offset.saturating_add(src.len()) > 4096 {
            return;
        }
        if offset.is_multiple_of(8) && src.len().is_multiple_of(8) {
            for (i, c) in src.chunks_exact(8).enumerate() {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                let p = (self.va + (offset + 8 * i) as u64) as *mut u64;
                // SAFETY: see the impl comment (8-byte aligned).
                unsafe { core::ptr::write_volatile(p, u64::from_le_bytes(w)) };
            }
        } else {
            for (i, &b) in src.iter().enumerate() {
                // SAFETY: see the impl comment.
                unsafe { core::ptr::write_volatile((self.va + (offset + i) as u64) as *mut u8, b) };
            }
        }
    }
    fn fence(&self, f: Fence) {
        match f {
            // x86-TSO: only the compiler may reorder loads with loads or stores with
            // stores; a store followed by a load needs a real barrier.
            Fence::Read => compiler_fence(Ordering::Acquire),
            Fence::Write => compiler_fence(Ordering::Release),
            Fence::Full => fence(Ordering::SeqCst),
        }
    }
}

/// A zeroed dom0 frame for a device: accessor and machine address. Frames are never given
/// back (devices live as long as dom0).
fn dma_page() -> Option<Page<DmaPage>> {
    let f = mmu::alloc_frame(Pool::Mapped).ok()?;
    // The frame token goes out of scope without `free_frame`: the page stays the device's.
    let (va, maddr) = (f.va()?, f.mfn() << 12);
    Some(Page {
        mem: DmaPage { va },
        maddr,
    })
}

/// Data buffers for dom0's own disk tools: dom0 frames with their machine addresses,
/// returned to the allocator on drop. They come from above the boot mapping where they can
/// (that pool is small and the drivers' request pages live in it), and are only mapped for
/// the moment the CPU looks at them; the device needs none of that.
struct Buffers {
    frames: Vec<mmu::Frame>,
}

impl Buffers {
    fn new(pages: usize) -> Option<Buffers> {
        let mut buf = Buffers {
            frames: Vec::with_capacity(pages),
        };
        for _ in 0..pages {
            let f = mmu::alloc_frame(Pool::Unmapped)
                .or_else(|_| mmu::alloc_frame(Pool::Mapped))
                .ok()?;
            buf.frames.push(f);
        }
        Some(buf)
    }

    fn segment(&self, i: usize) -> DmaSegment {
        DmaSegment {
            maddr: self.frames[i].mfn() << 12,
            len: 4096,
        }
    }

    /// Runs `f` on page `i`'s bytes (mapped for the call if it has no mapping). Only while
    /// no request on the page is in flight. None if no mapping slot was free.
    fn with_page<R>(&mut self, i: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        let frame = &self.frames[i];
        let (va, temp) = match frame.va() {
            Some(va) => (va, None),
            None => {
                let m = mmu::map(frame.mfn(), true).ok()?;
                (m.va(), Some(m))
            }
        };
        // SAFETY: `va` maps this frame RW (the boot mapping or the slot just mapped); the
        // frame is owned by this object and `&mut self` makes the slice exclusive; callers
        // only use it with no DMA in flight.
        let r = f(unsafe { core::slice::from_raw_parts_mut(va as *mut u8, 4096) });
        if let Some(m) = temp {
            let _ = mmu::unmap(m);
        }
        Some(r)
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        for f in self.frames.drain(..) {
            mmu::free_frame(f);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Interrupts.

/// MSI-X interrupts received (all disks).
static IRQS: AtomicU64 = AtomicU64::new(0);
/// "Polling" was said once.
static SAID_POLLING: AtomicBool = AtomicBool::new(false);

/// Interrupt delivery of one disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Irq {
    /// Completions reaped by polling.
    Polling,
    /// MSI-X table entry 0 → pirq → event channel.
    Msix { pirq: u32, port: u32 },
}

fn on_disk_irq(_port: u32) {
    // The work happens in poll()/complete(); the event only wakes dom0 from SCHEDOP_block.
    IRQS.fetch_add(1, Ordering::Relaxed);
}

/// Binds MSI-X table entry 0 of `f` to a pirq and an event channel and points queue 0 at
/// it (the hypervisor programs the table and enables MSI-X in PHYSDEVOP_map_pirq).
fn setup_msix(
    cs: &mut Access,
    f: &Function,
    msix_cap: Option<u8>,
    blk: &mut Blk,
) -> Result<Irq, String> {
    use pv_guest::{events, hypercall};
    let cap = msix_cap.ok_or_else(|| String::from("no MSI-X capability"))?;
    let table = cs.read32(f.bdf, cap + 4);
    let bir = (table & 7) as usize;
    let Some(Bar::Mem { addr, .. }) = f.bars.get(bir).copied() else {
        return Err(String::from("MSI-X table BAR is not memory"));
    };
    let table_base = addr + u64::from(table & !7);
    let pirq = hypercall::physdev_map_pirq_msix(f.bdf.bus, f.bdf.devfn(), 0, table_base)
        .map_err(|e| format!("PHYSDEVOP_map_pirq: {e}"))?;
    let port = match events::bind_pirq(pirq, on_disk_irq) {
        Ok(p) => p,
        Err(e) => {
            let _ = hypercall::physdev_unmap_pirq(pirq);
            return Err(format!("EVTCHNOP_bind_pirq: {e}"));
        }
    };
    if !blk.use_msix_vector(0) {
        let _ = events::close(port);
        let _ = hypercall::physdev_unmap_pirq(pirq);
        return Err(String::from("the device refused MSI-X vector 0"));
    }
    Ok(Irq::Msix { pirq, port })
}

// ---------------------------------------------------------------------------------------
// The registry.

type Blk = VirtioBlk<MmioWindow, DmaPage>;

/// A registered disk.
struct Disk {
    name: String,
    bdf: Bdf,
    info: DiskInfo,
    features: u64,
    irq: Irq,
    /// The device, unless a user holds it.
    dev: Option<Owned>,
}

/// A disk's device while the registry holds it.
struct Owned(Box<dyn BlockDevice>);

// SAFETY: dom0 runs on one vCPU and only its main loop (never an event handler) touches
// the registry; the device's raw VAs point at mappings that live as long as dom0.
unsafe impl Send for Owned {}

static DISKS: Mutex<Vec<Disk>> = Mutex::new(Vec::new());

/// Takes disk `name` for exclusive use (a backend or a dom0 tool); `None` if there is no
/// such disk or someone else holds it.
pub fn take(name: &str) -> Option<Box<dyn BlockDevice>> {
    let mut disks = DISKS.lock();
    let d = disks.iter_mut().find(|d| d.name == name)?;
    d.dev.take().map(|o| o.0)
}

/// Returns a disk taken with [`take`].
pub fn give_back(name: &str, dev: Box<dyn BlockDevice>) {
    let mut disks = DISKS.lock();
    if let Some(d) = disks.iter_mut().find(|d| d.name == name) {
        d.dev = Some(Owned(dev));
    }
}

/// Names of all disks, in order.
pub fn names() -> Vec<String> {
    DISKS.lock().iter().map(|d| d.name.clone()).collect()
}

/// Geometry of disk `name`.
pub fn info(name: &str) -> Option<DiskInfo> {
    DISKS.lock().iter().find(|d| d.name == name).map(|d| d.info)
}

/// MSI-X interrupts received so far by all disks.
pub fn interrupts() -> u64 {
    IRQS.load(Ordering::Relaxed)
}

fn disk_name(i: usize) -> String {
    // vda..vdz, then vdaa.. as Linux does.
    let mut s = String::from("vd");
    if i >= 26 {
        s.push((b'a' + (i / 26 - 1) as u8) as char);
    }
    s.push((b'a' + (i % 26) as u8) as char);
    s
}

/// Finds the virtio-blk functions on the PCI bus, drives them and registers them as
/// `vda`, `vdb`, ... Call once, after the toolstack set up the heap and map area.
pub fn init() {
    let r = with_config(|cs| {
        let funcs = pci::enumerate(cs);
        let mut found = 0;
        for f in funcs
            .iter()
            .filter(|f| virtio::is_virtio(f, virtio::DEVICE_TYPE_BLOCK))
        {
            let name = disk_name(found);
            found += 1;
            attach_and_register(cs, f, &name);
        }
        found
    });
    match r {
        Ok(0) => println!("dom0: disks: no virtio-blk device"),
        Ok(_) => {}
        Err(e) => println!("dom0: disks: no PCI access: {e}"),
    }
}

fn attach_and_register(cs: &mut Access, f: &Function, name: &str) {
    {
        match attach(cs, f, name) {
            Ok(d) => {
                println!(
                    "dom0: {}: virtio-blk at {} ({} sectors, {} MiB{}{}{}), {} segments, depth {}, {}",
                    d.name,
                    d.bdf,
                    d.info.sectors,
                    d.info.sectors / 2048,
                    if d.info.read_only { ", ro" } else { "" },
                    if d.info.flush { ", flush" } else { "" },
                    if d.info.discard { ", discard" } else { "" },
                    d.info.max_segments,
                    d.info.queue_depth,
                    match d.irq {
                        Irq::Polling => String::from("polling"),
                        Irq::Msix { pirq, port } => format!("MSI-X pirq {pirq} port {port}"),
                    }
                );
                DISKS.lock().push(d);
            }
            Err(e) => println!("dom0: {name}: virtio-blk at {}: {e}", f.bdf),
        }
    }
}

fn attach(cs: &mut Access, f: &Function, name: &str) -> Result<Disk, String> {
    let layout = virtio::parse_layout(cs, f).map_err(|e| format!("{e}"))?;
    pci::enable(
        cs,
        f.bdf,
        pci::reg::CMD_MEMORY | pci::reg::CMD_MASTER | pci::reg::CMD_INTX_DISABLE,
    );
    let err = |e: virtio::Error| format!("{e}");
    let transport = Transport {
        common: map_region(f, layout.common, 4096).map_err(err)?,
        notify: map_region(f, layout.notify, 4096).map_err(err)?,
        notify_multiplier: layout.notify_multiplier,
        device: match layout.device {
            Some(r) => map_region(f, r, 4096).map_err(err)?,
            None => MmioWindow { va: 0, len: 0 },
        },
    };
    let mut blk =
        VirtioBlk::new(transport, &mut dma_page, dom0::virtio::blk::MAX_DEPTH).map_err(err)?;
    let irq = match setup_msix(cs, f, layout.msix_cap, &mut blk) {
        Ok(irq) => irq,
        Err(e) => {
            if !SAID_POLLING.swap(true, Ordering::Relaxed) {
                println!("dom0: disks: no MSI-X interrupts ({e}); polling for completions");
            }
            Irq::Polling
        }
    };
    Ok(Disk {
        name: String::from(name),
        bdf: f.bdf,
        info: blk.info(),
        features: blk.features(),
        irq,
        dev: Some(Owned(Box::new(blk))),
    })
}

// ---------------------------------------------------------------------------------------
// Shell commands.

const USAGE: &str = "usage: disk list | disk write NAME SECTOR COUNT SEED | \
disk verify NAME SECTOR COUNT SEED | disk flush NAME | disk discard NAME SECTOR COUNT | \
disk bench NAME";

/// Handles `lspci` and `disk ...`; `None` if `line` is another command.
pub fn command(line: &str, h: &mut impl Host) -> Option<Outcome> {
    let mut w = line.split_ascii_whitespace();
    match w.next() {
        Some("lspci") => lspci(h),
        Some("disk") => {
            let args: Vec<&str> = w.collect();
            if let Err(e) = disk(&args, h) {
                let _ = writeln!(h, "disk: {e}");
            }
        }
        _ => return None,
    }
    Some(Outcome::Continue)
}

fn lspci(h: &mut impl Host) {
    match with_config(pci::enumerate) {
        Ok(funcs) => {
            for f in funcs {
                let _ = writeln!(h, "{}", pci::LspciLine(&f));
            }
        }
        Err(e) => {
            let _ = writeln!(h, "lspci: {e}");
        }
    }
}

fn num(s: Option<&&str>) -> Result<u64, String> {
    let s = s.ok_or_else(|| String::from(USAGE))?;
    let r = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("bad number {s}"))
}

/// A disk taken from the registry for the length of one command.
struct Held {
    name: String,
    dev: Option<Box<dyn BlockDevice>>,
}

impl Held {
    fn get(name: &str) -> Result<Held, String> {
        if info(name).is_none() {
            return Err(format!("no disk {name}"));
        }
        let dev = take(name).ok_or_else(|| format!("{name} is in use"))?;
        Ok(Held {
            name: String::from(name),
            dev: Some(dev),
        })
    }

    fn dev(&mut self) -> &mut dyn BlockDevice {
        // `dev` is only None after drop.
        match self.dev.as_mut() {
            Some(d) => d.as_mut(),
            None => unreachable!("Held without a device"),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(d) = self.dev.take() {
            // Anything still in flight (after a timeout) completes into the void.
            give_back(&self.name, d);
        }
    }
}

/// How long one request may take before a tool gives up.
const IO_TIMEOUT_NS: u64 = 30_000_000_000;

/// Submits one request (retrying while the queue is busy) and waits for everything.
fn run_sync(dev: &mut dyn BlockDevice, req: &DeviceRequest<'_>) -> Result<(), String> {
    let deadline = time::now_ns() + IO_TIMEOUT_NS;
    loop {
        match dev.submit(req) {
            Ok(()) => break,
            Err(blkback::SubmitError::Busy) => {
                dev.complete(&mut |_, _| {});
                if time::now_ns() > deadline {
                    return Err(String::from("queue stays busy"));
                }
            }
            Err(blkback::SubmitError::Invalid) => {
                return Err(String::from("request refused (range, alignment or mode)"))
            }
        }
    }
    dev.kick();
    let mut status = DeviceStatus::Ok;
    let tag = req.tag;
    while dev.in_flight() > 0 {
        dev.complete(&mut |t, s| {
            if t == tag {
                status = s;
            }
        });
        if time::now_ns() > deadline {
            return Err(String::from("timed out waiting for the device"));
        }
        core::hint::spin_loop();
    }
    match status {
        DeviceStatus::Ok => Ok(()),
        s => Err(format!("device status {s:?}")),
    }
}

fn disk(args: &[&str], h: &mut impl Host) -> Result<(), String> {
    match args.first().copied() {
        Some("list") | None => {
            list(h);
            Ok(())
        }
        Some(op @ ("write" | "verify")) => {
            let name = args.get(1).ok_or_else(|| String::from(USAGE))?;
            let (sector, count, seed) = (num(args.get(2))?, num(args.get(3))?, num(args.get(4))?);
            let mut held = Held::get(name)?;
            pattern_io(held.dev(), op == "write", sector, count, seed, h)
        }
        Some("flush") => {
            let name = args.get(1).ok_or_else(|| String::from(USAGE))?;
            let mut held = Held::get(name)?;
            run_sync(
                held.dev(),
                &DeviceRequest {
                    tag: 1,
                    op: BlockOp::Flush,
                    sector: 0,
                    nr_sectors: 0,
                    segments: &[],
                },
            )?;
            let _ = writeln!(h, "disk: flush ok");
            Ok(())
        }
        Some("discard") => {
            let name = args.get(1).ok_or_else(|| String::from(USAGE))?;
            let (sector, count) = (num(args.get(2))?, num(args.get(3))?);
            let mut held = Held::get(name)?;
            let max = u64::from(held.dev().info().max_discard_sectors);
            if max == 0 {
                return Err(format!("{name} does not support discard"));
            }
            let mut done = 0;
            while done < count {
                let n = (count - done).min(max);
                run_sync(
                    held.dev(),
                    &DeviceRequest {
                        tag: 1,
                        op: BlockOp::Discard,
                        sector: sector + done,
                        nr_sectors: n,
                        segments: &[],
                    },
                )?;
                done += n;
            }
            let _ = writeln!(h, "disk: discard ok ({count} sectors)");
            Ok(())
        }
        Some("bench") => {
            let name = args.get(1).ok_or_else(|| String::from(USAGE))?;
            let mut held = Held::get(name)?;
            bench(held.dev(), h)
        }
        Some(_) => Err(String::from(USAGE)),
    }
}

fn list(h: &mut impl Host) {
    let _ = writeln!(
        h,
        "{} disk(s), {} MSI-X interrupts",
        DISKS.lock().len(),
        interrupts()
    );
    let _ = writeln!(
        h,
        "{:<6} {:>12} {:>9} {:>3}  {:<8} flags",
        "name", "sectors", "size MiB", "ro", "pci"
    );
    for d in DISKS.lock().iter() {
        let i = d.info;
        let mut flags = String::new();
        if i.flush {
            flags.push_str("flush ");
        }
        if i.discard {
            let _ = write!(flags, "discard(max {}) ", i.max_discard_sectors);
        }
        let _ = write!(
            flags,
            "bs {} segs {} qd {} features {:#x} {}{}",
            i.sector_size,
            i.max_segments,
            i.queue_depth,
            d.features,
            match d.irq {
                Irq::Polling => "polling",
                Irq::Msix { .. } => "msix",
            },
            if d.dev.is_none() { " (in use)" } else { "" }
        );
        let _ = writeln!(
            h,
            "{:<6} {:>12} {:>9} {:>3}  {:<8} {}",
            d.name,
            i.sectors,
            i.sectors / 2048,
            if i.read_only { "yes" } else { "no" },
            d.bdf,
            flags
        );
    }
}

/// Sectors per request of the pattern tools (64 KiB).
const PATTERN_CHUNK_PAGES: usize = 16;

fn pattern_io(
    dev: &mut dyn BlockDevice,
    write: bool,
    sector: u64,
    count: u64,
    seed: u64,
    h: &mut impl Host,
) -> Result<(), String> {
    let info = dev.info();
    if sector.checked_add(count).is_none_or(|e| e > info.sectors) {
        return Err(format!("sectors {sector}+{count} beyond {}", info.sectors));
    }
    let pages = PATTERN_CHUNK_PAGES.min(info.max_segments as usize).max(1);
    let mut buf = Buffers::new(pages).ok_or_else(|| String::from("out of memory"))?;
    let mut done = 0u64;
    while done < count {
        let n = (count - done).min(pages as u64 * 8);
        let s0 = sector + done;
        let npages = n.div_ceil(8) as usize;
        let mut segs = Vec::with_capacity(npages);
        for p in 0..npages {
            let secs = (n - p as u64 * 8).min(8);
            if write {
                let bytes = secs as usize * 512;
                buf.with_page(p, |b| {
                    blkfront::fill_pattern(seed, s0 + p as u64 * 8, &mut b[..bytes])
                })
                .ok_or_else(|| String::from("no mapping slot free"))?;
            }
            segs.push(DmaSegment {
                len: secs as u32 * 512,
                ..buf.segment(p)
            });
        }
        run_sync(
            dev,
            &DeviceRequest {
                tag: s0,
                op: if write { BlockOp::Write } else { BlockOp::Read },
                sector: s0,
                nr_sectors: n,
                segments: &segs,
            },
        )?;
        if !write {
            for (p, seg) in segs.iter().enumerate() {
                let bytes = seg.len as usize;
                let first = s0 + p as u64 * 8;
                let mismatch = buf
                    .with_page(p, |b| blkfront::check_pattern(seed, first, &b[..bytes]))
                    .ok_or_else(|| String::from("no mapping slot free"))?;
                if let Some(bad) = mismatch.map(|at| first + at as u64 / 512) {
                    let _ = writeln!(h, "disk: verify FAILED at sector {bad}");
                    return Ok(());
                }
            }
        }
        done += n;
    }
    let _ = writeln!(
        h,
        "disk: {} ok ({count} sectors from {sector}, seed {seed})",
        if write { "write" } else { "verify" }
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Benchmark.

/// Bytes each sequential row moves.
const BENCH_SEQ_BYTES: u64 = 32 << 20;
/// Bytes each random row moves.
const BENCH_RAND_BYTES: u64 = 4 << 20;

/// One row: `pattern` (seq1m / rand4k), write or read, queue depth.
struct Row {
    pattern: &'static str,
    write: bool,
    qd: usize,
}

fn bench(dev: &mut dyn BlockDevice, h: &mut impl Host) -> Result<(), String> {
    let info = dev.info();
    if info.sectors < 2048 {
        return Err(String::from("disk smaller than 1 MiB"));
    }
    // One 1 MiB buffer shared by every request in flight: a throughput benchmark does not
    // care which request's data lands last (fio's shared buffers do the same).
    let mut buf = Buffers::new(256).ok_or_else(|| String::from("out of memory"))?;
    for p in 0..256 {
        buf.with_page(p, |b| blkfront::fill_pattern(0xbe, p as u64 * 8, b))
            .ok_or_else(|| String::from("no mapping slot free"))?;
    }
    let mut rows = Vec::new();
    for pattern in ["seq1m", "rand4k"] {
        for write in [false, true] {
            for qd in [1, 32] {
                rows.push(Row { pattern, write, qd });
            }
        }
    }
    if info.read_only {
        rows.retain(|r| !r.write);
    }
    let _ = writeln!(
        h,
        "disk: bench (destroys the disk's data; seq {} MiB, rand {} MiB per row)",
        BENCH_SEQ_BYTES >> 20,
        BENCH_RAND_BYTES >> 20
    );
    for row in rows {
        bench_row(dev, &buf, &row, h)?;
    }
    Ok(())
}

fn bench_row(
    dev: &mut dyn BlockDevice,
    buf: &Buffers,
    row: &Row,
    h: &mut impl Host,
) -> Result<(), String> {
    let info = dev.info();
    let seq = row.pattern == "seq1m";
    // A 1 MiB op is split into requests of whole pages the device accepts.
    let op_pages: u64 = if seq { 256 } else { 1 };
    let mut req_pages = op_pages.min(u64::from(info.max_segments.max(1)));
    while !op_pages.is_multiple_of(req_pages) {
        req_pages -= 1;
    }
    let req_bytes = req_pages * 4096;
    let budget = if seq {
        BENCH_SEQ_BYTES
    } else {
        BENCH_RAND_BYTES
    };
    let total_reqs = budget / req_bytes;
    let qd = row.qd.min(info.queue_depth as usize).max(1);
    let span_reqs = info.sectors / (req_pages * 8);
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let op = if row.write {
        BlockOp::Write
    } else {
        BlockOp::Read
    };
    let (mut submitted, mut completed, mut errors) = (0u64, 0u64, 0u64);
    let mut segs: Vec<DmaSegment> = Vec::with_capacity(req_pages as usize);
    let start = time::now_ns();
    let deadline = start + IO_TIMEOUT_NS * 4;
    while completed < total_reqs {
        let mut batch = 0;
        while submitted < total_reqs && (submitted - completed) < qd as u64 {
            let index = if seq {
                submitted % span_reqs
            } else {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % span_reqs
            };
            segs.clear();
            for p in 0..req_pages {
                segs.push(buf.segment(((index * req_pages + p) % 256) as usize));
            }
            let req = DeviceRequest {
                tag: submitted,
                op,
                sector: index * req_pages * 8,
                nr_sectors: req_pages * 8,
                segments: &segs,
            };
            match dev.submit(&req) {
                Ok(()) => {
                    submitted += 1;
                    batch += 1;
                }
                Err(blkback::SubmitError::Busy) => break,
                Err(blkback::SubmitError::Invalid) => {
                    return Err(String::from("bench request refused"))
                }
            }
        }
        if batch > 0 {
            dev.kick();
        }
        completed += dev.complete(&mut |_, s| {
            if s != DeviceStatus::Ok {
                errors += 1;
            }
        }) as u64;
        if time::now_ns() > deadline {
            return Err(format!("{} timed out", row.pattern));
        }
    }
    let ns = (time::now_ns() - start).max(1);
    let bytes = total_reqs * req_bytes;
    let ops = bytes / (op_pages * 4096);
    let name = if row.write { "write" } else { "read" };
    let _ = writeln!(
        h,
        "BENCH blk dom0 {} {name} qd{} {bytes} {ns} {ops}",
        row.pattern, row.qd
    );
    let _ = writeln!(
        h,
        "disk: {:<6} {name:<5} qd{:<2} {:>6} MiB/s {:>7} IOPS{}",
        row.pattern,
        row.qd,
        (bytes * 1_000_000_000 / ns) >> 20,
        ops * 1_000_000_000 / ns,
        if errors > 0 {
            format!(" ({errors} errors)")
        } else {
            String::new()
        }
    );
    Ok(())
}
