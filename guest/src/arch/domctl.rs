//! Toolstack hypercalls of the control domain: `domctl` (rxen's layouts, Xen's command
//! numbers; abi/src/domctl.rs) and `memory_op` reservations on behalf of another domain.

use super::hypercall::{call, check, Result};
use xen_abi::domctl::Domctl;
use xen_abi::hypercall as nr;
use xen_abi::memory::XenMemoryReservation;
use zerocopy::FromZeros;

/// `domctl(&d)`: the hypervisor reads `d`, acts, and writes results back into it.
pub fn domctl(d: &mut Domctl) -> Result<u64> {
    // SAFETY: the hypervisor reads and writes exactly one `Domctl` at this address.
    check(unsafe { call(nr::DOMCTL, [d as *mut Domctl as u64, 0, 0, 0, 0]) })
}

/// `memory_op(cmd, reservation)` for domain `domid` (privileged callers), 4 KiB extents:
/// populate_physmap takes PFNs in `frames` and returns MFNs there; decrease takes MFNs.
/// Returns the number of extents done.
pub fn reservation_for(cmd: u32, domid: u16, frames: &mut [u64]) -> Result<u64> {
    let mut r = XenMemoryReservation::new_zeroed();
    r.extent_start = frames.as_mut_ptr() as u64;
    r.nr_extents = frames.len() as u64;
    r.domid = domid;
    // SAFETY: the hypervisor reads the reservation and reads/writes `frames`, a live
    // slice of `nr_extents` u64s; it never writes other memory of ours.
    check(unsafe {
        call(
            nr::MEMORY_OP,
            [
                u64::from(cmd),
                &mut r as *mut XenMemoryReservation as u64,
                0,
                0,
                0,
            ],
        )
    })
}
