//! Hypercalls of a toolstack (dom0 only) beyond [`super::domctl`]: a vCPU's initial
//! context, pinning another domain's page tables
//! (`mmuext_op` with `foreigndom`), and mapping another domain's frames into a map-area
//! slot of ours (`mmu_update` with `foreigndom`, as libxc's `xc_map_foreign_*` ends up
//! doing on a PV dom0).
//!
//! `domctl` itself and `populate_physmap` for another domain are in [`super::domctl`].

use xen_abi::domctl::{Domctl, DomctlVcpuContext, DOMCTL_SETVCPUCONTEXT};
use xen_abi::xen::{MmuUpdate, MmuextOp, VcpuGuestContext, MMUEXT_PIN_L4_TABLE, UVMF_INVLPG};

use super::hypercall::{self as hc, Result};
use super::mmu::{self, MmError, MmResult};
use crate::mm::{pte, pte_of};

/// `DOMCTL_SETVCPUCONTEXT`: the payload carries the address of `ctx`, which the
/// hypervisor reads (5168 bytes) while the call runs.
pub fn set_vcpu_context(domain: u16, vcpu: u32, ctx: &VcpuGuestContext) -> Result<()> {
    let mut d = Domctl::new(DOMCTL_SETVCPUCONTEXT, domain);
    d.set_payload(&DomctlVcpuContext {
        vcpu,
        pad: 0,
        ctxt: ctx as *const VcpuGuestContext as u64,
    });
    super::domctl::domctl(&mut d).map(|_| ())
}

/// `MMUEXT_PIN_L4_TABLE` of `mfn` on behalf of `domid` (libxc's `pin_table`): validates
/// the domain's initial page tables. Changes no mapping of ours.
pub fn pin_l4_foreign(domid: u16, mfn: u64) -> Result<u64> {
    let op = [MmuextOp {
        cmd: MMUEXT_PIN_L4_TABLE,
        pad: 0,
        arg1: mfn,
        arg2: 0,
    }];
    // SAFETY: a pin of another domain's frame changes none of our mappings.
    unsafe { hc::mmuext_op(&op, u32::from(domid)) }.result
}

/// One frame of another domain mapped in a map-area slot of ours.
#[derive(Debug)]
pub struct ForeignPage {
    slot: usize,
    mfn: u64,
}

impl ForeignPage {
    /// Maps `mfn` (owned by `domid`) read-write: `mmu_update` of the slot's L1 entry with
    /// `foreigndom = domid`, then a local INVLPG.
    pub fn map(domid: u16, mfn: u64) -> MmResult<ForeignPage> {
        let slot = mmu::reserve_slots(1)?;
        let p = ForeignPage {
            slot,
            mfn: u64::MAX,
        };
        match p.remap(domid, mfn) {
            Ok(p) => Ok(p),
            Err((p, e)) => {
                mmu::release_slots(p.slot, 1);
                Err(e)
            }
        }
    }

    /// Points the slot at another frame of `domid` (cheaper than unmap + map).
    pub fn remap(
        mut self,
        domid: u16,
        mfn: u64,
    ) -> core::result::Result<ForeignPage, (ForeignPage, MmError)> {
        let Some(ptr) = mmu::slot_maddr(self.slot) else {
            return Err((self, MmError::Uninit));
        };
        let req = [MmuUpdate {
            ptr,
            val: pte_of(mfn, pte::KERNEL_RW),
        }];
        // SAFETY: the target is the L1 entry of a map-area slot reserved by this handle,
        // where no Rust object lives.
        let b = unsafe { hc::mmu_update(&req, u32::from(domid)) };
        if let Err(e) = b.result {
            return Err((self, MmError::Hypercall("mmu_update (foreign map)", e)));
        }
        if let Err(e) = mmu::invlpg(self.va()) {
            return Err((self, MmError::Hypercall("invlpg", e)));
        }
        self.mfn = mfn;
        Ok(self)
    }

    /// The mapped frame.
    pub fn mfn(&self) -> u64 {
        self.mfn
    }

    fn va(&self) -> u64 {
        mmu::slot_va(self.slot)
    }

    /// Copies `bytes` to offset `off` (bounded to the page; excess is dropped).
    pub fn write(&mut self, off: usize, bytes: &[u8]) {
        let n = bytes.len().min(4096usize.saturating_sub(off));
        for (i, &b) in bytes[..n].iter().enumerate() {
            self.store8(off + i, b);
        }
    }

    /// Zeroes the page.
    pub fn zero(&mut self) {
        for i in 0..512 {
            // SAFETY: the slot maps a frame writable (map succeeded); i < 512 words.
            unsafe { core::ptr::write_volatile((self.va() as *mut u64).add(i), 0) };
        }
    }

    /// Volatile 32-bit load at `off` (& 0xffc, so always inside the page).
    pub fn load32(&self, off: usize) -> u32 {
        // SAFETY: mapped; aligned offset inside the page; the other domain may write it
        // concurrently, hence volatile and no reference.
        unsafe { core::ptr::read_volatile((self.va() + (off as u64 & 0xffc)) as *const u32) }
    }

    /// Volatile 32-bit store at `off` (& 0xffc).
    pub fn store32(&mut self, off: usize, v: u32) {
        // SAFETY: as `load32`, mapped writable.
        unsafe { core::ptr::write_volatile((self.va() + (off as u64 & 0xffc)) as *mut u32, v) }
    }

    /// Volatile byte load at `off` (& 0xfff).
    pub fn load8(&self, off: usize) -> u8 {
        // SAFETY: as `load32`.
        unsafe { core::ptr::read_volatile((self.va() + (off as u64 & 0xfff)) as *const u8) }
    }

    /// Volatile byte store at `off` (& 0xfff).
    pub fn store8(&mut self, off: usize, v: u8) {
        // SAFETY: as `store32`.
        unsafe { core::ptr::write_volatile((self.va() + (off as u64 & 0xfff)) as *mut u8, v) }
    }

    /// Unmaps the page and frees the slot.
    pub fn unmap(self) {
        if mmu::update_slot(self.slot, 0, UVMF_INVLPG).is_ok() {
            mmu::release_slots(self.slot, 1);
        }
        // A slot whose entry could not be cleared stays reserved: it still maps the frame.
    }
}
