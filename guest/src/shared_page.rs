//! Pages a guest shares with another domain through a free-running byte-stream ring: the
//! xenstore ring (`struct xenstore_domain_interface`, ABI.md §4.2) and the console ring
//! (`struct xencons_interface`, ABI.md §5.4). Both follow Xen's `xen/include/public/io/`
//! byte-ring rules: each direction has a power-of-two data array and two free-running `u32`
//! indices; byte `i` lives at `i & (size - 1)`; `prod - cons` (wrapping) is the amount
//! queued and can never exceed the size; the producer writes data, then (write barrier) its
//! index; the consumer reads the index, then (read barrier) the data, then advances its own
//! index.
//!
//! * [`SharedPage`]: a handle to one mapped 4 KiB page with atomic, bounds-checked
//!   accessors. It is the only part of this module that uses `unsafe` (like
//!   [`crate::shared`], it touches memory another party writes concurrently): no Rust
//!   reference into the page ever exists; every access is an atomic load or store.
//! * [`Producer`], [`Consumer`]: the portable halves of one stream. Each keeps a private
//!   copy of the index it owns (the peer may scribble on the shared copy) and checks the
//!   peer's index before using it: a peer that claims more than the ring holds gets a
//!   [`RingIndexError`], never a panic or an access outside the data array.
//! * [`frame_va`]: where the builder's initial mapping shows a frame of ours (the store and
//!   console pages are inside it, ABI.md §1.3), through the M2P or our p2m list.

use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use xen_abi::xen::StartInfo;

use crate::mm::{BootLayout, PAGE_SIZE};
use crate::start::VIRT_BASE;

/// Bytes in a [`SharedPage`].
pub const PAGE_BYTES: usize = PAGE_SIZE as usize;

/// A mapped 4 KiB page shared with another domain, accessed only atomically.
///
/// Offsets are reduced into the page (`off % 4096`, and aligned down for `u32`s), so no
/// argument can make an access leave the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedPage {
    /// Page-aligned VA of the mapping.
    va: u64,
}

impl SharedPage {
    /// A handle to the page mapped at `va` (`None` if `va` is 0 or not page aligned).
    ///
    /// # Safety
    /// `va` must be a page mapped readable and writable for the rest of the kernel's life,
    /// that no Rust reference points into and that this kernel uses for nothing else than
    /// through `SharedPage` handles (other domains may write it at any time).
    pub unsafe fn new(va: u64) -> Option<SharedPage> {
        (va != 0 && va.is_multiple_of(PAGE_SIZE)).then_some(SharedPage { va })
    }

    /// The page's VA.
    pub fn va(&self) -> u64 {
        self.va
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        let off = (off % PAGE_BYTES) & !3;
        // SAFETY: `self.va` is a mapped RW page that nothing else references (constructor's
        // contract); `off` is 4-aligned and < 4096, so the u32 lies inside the page and is
        // aligned. Shared memory is accessed only through atomics.
        unsafe { AtomicU32::from_ptr((self.va as *mut u8).add(off).cast::<u32>()) }
    }

    fn u8_at(&self, off: usize) -> &AtomicU8 {
        let off = off % PAGE_BYTES;
        // SAFETY: as in `u32_at`; a byte at an offset < 4096 is inside the page.
        unsafe { AtomicU8::from_ptr((self.va as *mut u8).add(off)) }
    }

    /// Load the `u32` at `off` (acquire: data the peer wrote before it is visible after).
    pub fn load_u32(&self, off: usize) -> u32 {
        self.u32_at(off).load(Ordering::Acquire)
    }

    /// Store `v` at `off` (release: our earlier reads and writes of the page happen before).
    pub fn store_u32(&self, off: usize, v: u32) {
        self.u32_at(off).store(v, Ordering::Release);
    }

    /// Copy bytes from the page at `off` into `buf`; stops at the end of the page and returns
    /// the number copied.
    pub fn read_bytes(&self, off: usize, buf: &mut [u8]) -> usize {
        let n = buf.len().min(PAGE_BYTES.saturating_sub(off));
        for (i, b) in buf.iter_mut().take(n).enumerate() {
            *b = self.u8_at(off + i).load(Ordering::Relaxed);
        }
        n
    }

    /// Copy `data` into the page at `off`; stops at the end of the page and returns the
    /// number copied.
    pub fn write_bytes(&self, off: usize, data: &[u8]) -> usize {
        let n = data.len().min(PAGE_BYTES.saturating_sub(off));
        for (i, &b) in data.iter().take(n).enumerate() {
            self.u8_at(off + i).store(b, Ordering::Relaxed);
        }
        n
    }

    /// A zeroed page on the heap, leaked: host builds only, so that host tests (here and in
    /// the crates built on pv-guest) can put both ends of a ring on one page.
    #[cfg(not(target_os = "none"))]
    pub fn leak_host_page() -> SharedPage {
        extern crate std;
        #[repr(C, align(4096))]
        struct Page([u8; PAGE_BYTES]);
        let p: &'static mut Page =
            std::boxed::Box::leak(std::boxed::Box::new(Page([0; PAGE_BYTES])));
        let va = p.0.as_mut_ptr() as u64;
        // SAFETY: a leaked, page-aligned heap page: mapped RW forever, and the `&mut` above
        // is not used again.
        match unsafe { SharedPage::new(va) } {
            Some(page) => page,
            None => unreachable!("Box honours the 4096 alignment"),
        }
    }
}

/// Where one direction of a byte ring lives in its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLayout {
    /// Offset of the data array.
    pub data: usize,
    /// Size of the data array (a power of two).
    pub size: u32,
    /// Offset of the consumer index.
    pub cons: usize,
    /// Offset of the producer index.
    pub prod: usize,
}

impl StreamLayout {
    /// Offset of stream byte `idx` in the page.
    fn at(&self, idx: u32) -> usize {
        self.data + (idx & (self.size - 1)) as usize
    }

    /// Bytes from stream position `idx` to the end of the data array.
    fn bytes_to_end(&self, idx: u32) -> usize {
        (self.size - (idx & (self.size - 1))) as usize
    }
}

/// The peer's index claims more queued bytes than the ring holds (`prod - cons > size`):
/// the ring is corrupt or the peer hostile. Carries the values seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingIndexError {
    /// Producer index used.
    pub prod: u32,
    /// Consumer index used.
    pub cons: u32,
}

/// The writing end of one stream: owns the producer index.
#[derive(Clone, Copy, Debug)]
pub struct Producer {
    page: SharedPage,
    layout: StreamLayout,
    /// Our producer index (the shared copy is only ever written from this).
    prod: u32,
}

impl Producer {
    /// Start producing at the producer index currently in the page.
    pub fn new(page: SharedPage, layout: StreamLayout) -> Producer {
        let prod = page.load_u32(layout.prod);
        Producer { page, layout, prod }
    }

    /// Bytes written but not yet consumed by the peer.
    pub fn queued(&self) -> Result<u32, RingIndexError> {
        let cons = self.page.load_u32(self.layout.cons);
        let used = self.prod.wrapping_sub(cons);
        if used > self.layout.size {
            return Err(RingIndexError {
                prod: self.prod,
                cons,
            });
        }
        Ok(used)
    }

    /// Write as much of `data` as fits (possibly nothing); returns the number of bytes.
    /// The caller notifies the peer when the count is non-zero.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, RingIndexError> {
        let free = (self.layout.size - self.queued()?) as usize;
        let n = free.min(data.len());
        let mut done = 0;
        while done < n {
            let idx = self.prod.wrapping_add(done as u32);
            let chunk = self.layout.bytes_to_end(idx).min(n - done);
            self.page
                .write_bytes(self.layout.at(idx), &data[done..done + chunk]);
            done += chunk;
        }
        if n > 0 {
            // Data before index (release store).
            self.prod = self.prod.wrapping_add(n as u32);
            self.page.store_u32(self.layout.prod, self.prod);
        }
        Ok(n)
    }
}

/// The reading end of one stream: owns the consumer index.
#[derive(Clone, Copy, Debug)]
pub struct Consumer {
    page: SharedPage,
    layout: StreamLayout,
    /// Our consumer index.
    cons: u32,
}

impl Consumer {
    /// Start consuming at the consumer index currently in the page.
    pub fn new(page: SharedPage, layout: StreamLayout) -> Consumer {
        let cons = page.load_u32(layout.cons);
        Consumer { page, layout, cons }
    }

    /// Bytes available to read.
    pub fn available(&self) -> Result<u32, RingIndexError> {
        // Index before data (acquire load).
        let prod = self.page.load_u32(self.layout.prod);
        let avail = prod.wrapping_sub(self.cons);
        if avail > self.layout.size {
            return Err(RingIndexError {
                prod,
                cons: self.cons,
            });
        }
        Ok(avail)
    }

    /// Read up to `buf.len()` available bytes; returns the number read (possibly 0). The
    /// caller notifies the peer when the count is non-zero (it may be waiting for space).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, RingIndexError> {
        let n = (self.available()? as usize).min(buf.len());
        let mut done = 0;
        while done < n {
            let idx = self.cons.wrapping_add(done as u32);
            let chunk = self.layout.bytes_to_end(idx).min(n - done);
            self.page
                .read_bytes(self.layout.at(idx), &mut buf[done..done + chunk]);
            done += chunk;
        }
        if n > 0 {
            // The data was copied out before the peer may reuse the space (release store).
            self.cons = self.cons.wrapping_add(n as u32);
            self.page.store_u32(self.layout.cons, self.cons);
        }
        Ok(n)
    }
}

/// VA at which the builder's initial mapping shows our frame `mfn`, if it does.
///
/// With [`crate::arch::mmu`] initialised, the M2P gives the PFN (checked against our p2m
/// and the walked end of the initial mapping); otherwise our p2m list is searched over the
/// boot region (everything below the page tables' end, where the builder puts the
/// start-of-day pages, ABI.md §1.3), which is mapped without needing a walk.
pub fn frame_va(si: &StartInfo, mfn: u64) -> Option<u64> {
    let va_of = |pfn: u64| pfn.checked_mul(PAGE_SIZE)?.checked_add(VIRT_BASE);
    let mapped = |pfn: u64| va_of(pfn).and_then(crate::start::va_to_mfn) == Some(mfn);
    if crate::arch::mmu::is_ready() {
        let end = crate::arch::mmu::layout()?.mapped_end_pfn;
        if let Some((pfn, _)) = crate::arch::mmu::probe_m2p_read(mfn) {
            if pfn < end && mapped(pfn) {
                return va_of(pfn);
            }
        }
        return (0..end).find(|&p| mapped(p)).and_then(va_of);
    }
    let layout = BootLayout::new(si.nr_pages, si.pt_base, si.nr_pt_frames, VIRT_BASE)?;
    (0..layout.first_free_pfn)
        .find(|&p| !layout.is_boot_pt(p) && mapped(p))
        .and_then(va_of)
}

/// A [`SharedPage`] for our frame `mfn`, which the builder set aside as a ring page (the
/// xenstore or console page named by start_info) inside the initial mapping.
///
/// Only the frames start_info names as ring pages may be passed here: they are RW in the
/// initial mapping, are not part of the kernel image, and are used only as shared pages.
pub(crate) fn ring_page(si: &StartInfo, mfn: u64) -> Option<SharedPage> {
    if mfn == 0 || (mfn != si.store_mfn && mfn != si.console_domu().0) {
        return None;
    }
    let va = frame_va(si, mfn)?;
    // SAFETY: `va` maps our frame `mfn` (checked through the p2m) inside the builder's
    // initial mapping, which stays mapped RW for the kernel's lifetime (page-table frames
    // are excluded: they are mapped RO). The frame is start_info's store or console page,
    // which the builder allocates outside the kernel image and every other start-of-day
    // object (ABI.md §1.3), so no Rust object lives there.
    unsafe { SharedPage::new(va) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: StreamLayout = StreamLayout {
        data: 0,
        size: 16,
        cons: 100,
        prod: 104,
    };

    fn pair() -> (SharedPage, Producer, Consumer) {
        let p = SharedPage::leak_host_page();
        (p, Producer::new(p, L), Consumer::new(p, L))
    }

    #[test]
    fn accessors_stay_inside_the_page() {
        let p = SharedPage::leak_host_page();
        p.store_u32(4094, 0xdead_beef); // aligned down to 4092
        assert_eq!(p.load_u32(4092), 0xdead_beef);
        assert_eq!(p.load_u32(4096 + 4092), 0xdead_beef); // reduced modulo the page
        assert_eq!(p.write_bytes(4090, &[1; 10]), 6);
        let mut b = [0; 10];
        assert_eq!(p.read_bytes(4090, &mut b), 6);
        assert_eq!(&b[..6], &[1; 6]);
        assert_eq!(p.read_bytes(5000, &mut b), 0);
        assert_eq!(p.write_bytes(usize::MAX, &b), 0);
    }

    #[test]
    fn stream_round_trip_and_wrap() {
        let (_, mut tx, mut rx) = pair();
        let mut buf = [0u8; 32];
        for round in 0..10u8 {
            let data: Vec<u8> = (0..11).map(|i| round * 16 + i).collect();
            assert_eq!(tx.write(&data), Ok(11));
            assert_eq!(rx.available(), Ok(11));
            assert_eq!(rx.read(&mut buf[..4]), Ok(4));
            assert_eq!(rx.read(&mut buf[4..]), Ok(7));
            assert_eq!(&buf[..11], &data[..]);
            assert_eq!(tx.queued(), Ok(0));
        }
    }

    #[test]
    fn full_ring_takes_what_fits() {
        let (_, mut tx, mut rx) = pair();
        assert_eq!(tx.write(&[7; 20]), Ok(16));
        assert_eq!(tx.write(&[8; 1]), Ok(0));
        let mut buf = [0u8; 5];
        assert_eq!(rx.read(&mut buf), Ok(5));
        assert_eq!(tx.write(&[9; 20]), Ok(5));
        let mut all = [0u8; 32];
        assert_eq!(rx.read(&mut all), Ok(16));
        assert_eq!(&all[..11], &[7; 11]);
        assert_eq!(&all[11..16], &[9; 5]);
    }

    #[test]
    fn indices_wrap_around_u32() {
        let p = SharedPage::leak_host_page();
        p.store_u32(L.prod, u32::MAX - 3);
        p.store_u32(L.cons, u32::MAX - 3);
        let (mut tx, mut rx) = (Producer::new(p, L), Consumer::new(p, L));
        assert_eq!(tx.write(b"0123456789"), Ok(10));
        assert_eq!(p.load_u32(L.prod), 6);
        let mut buf = [0u8; 10];
        assert_eq!(rx.read(&mut buf), Ok(10));
        assert_eq!(&buf, b"0123456789");
        assert_eq!(p.load_u32(L.cons), 6);
    }

    #[test]
    fn hostile_indices_are_errors() {
        let (p, mut tx, mut rx) = pair();
        // Consumer index ahead of the producer: "more than the ring" queued.
        p.store_u32(L.cons, 5);
        assert_eq!(tx.write(b"x"), Err(RingIndexError { prod: 0, cons: 5 }));
        assert!(tx.queued().is_err());
        // Producer index far ahead of our consumer index.
        p.store_u32(L.prod, 17);
        let mut buf = [0u8; 64];
        assert_eq!(rx.read(&mut buf), Err(RingIndexError { prod: 17, cons: 0 }));
        // Exactly full is fine; the shared copy of our own index is ignored.
        p.store_u32(L.prod, 16);
        assert_eq!(rx.read(&mut buf), Ok(16));
        p.store_u32(L.cons, 0xffff);
        assert_eq!(rx.available(), Ok(0));
    }
}
