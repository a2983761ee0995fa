//! Access to guest virtual memory from hypercalls (Xen's copy_from_guest /
//! copy_to_guest): the address must be a guest address (outside the hypervisor's
//! slots, canonical), and the copy runs on the guest's own page tables with a fault
//! fixup, so an unmapped or read-only guest address yields -EFAULT instead of a
//! hypervisor fault. CR0.WP is set, so read-only guest mappings stay read-only here.

use super::frame::TrapFrame;
use xen_abi::Errno;

unsafe extern "C" {
    fn guest_copy(dst: *mut u8, src: *const u8, len: usize) -> usize;
    static guest_copy_insn: u8;
    static guest_copy_fixup: u8;
}

pub use crate::guest_addr::is_guest_range;

/// Copies from the current guest's memory.
pub fn copy_from_guest(va: u64, out: &mut [u8]) -> Result<(), Errno> {
    if !is_guest_range(va, out.len()) {
        return Err(Errno::EFAULT);
    }
    // SAFETY: the source range is guest memory in the current address space (checked
    // above); a fault is recovered by the fixup and reported as bytes left over.
    let left = unsafe { guest_copy(out.as_mut_ptr(), va as *const u8, out.len()) };
    if left == 0 {
        Ok(())
    } else {
        Err(Errno::EFAULT)
    }
}

/// Copies into the current guest's memory.
pub fn copy_to_guest(va: u64, data: &[u8]) -> Result<(), Errno> {
    if !is_guest_range(va, data.len()) {
        return Err(Errno::EFAULT);
    }
    // SAFETY: as for copy_from_guest; the destination is guest memory, never the
    // hypervisor's, and writes to read-only guest pages fault (CR0.WP) and are recovered.
    let left = unsafe { guest_copy(va as *mut u8, data.as_ptr(), data.len()) };
    if left == 0 {
        Ok(())
    } else {
        Err(Errno::EFAULT)
    }
}

/// Reads a plain-data value from guest memory.
pub fn read<T: zerocopy::FromBytes + zerocopy::IntoBytes>(va: u64) -> Result<T, Errno> {
    let mut v = T::new_zeroed();
    copy_from_guest(va, v.as_mut_bytes())?;
    Ok(v)
}

/// Writes a plain-data value to guest memory.
pub fn write<T: zerocopy::IntoBytes + zerocopy::Immutable>(va: u64, v: &T) -> Result<(), Errno> {
    copy_to_guest(va, v.as_bytes())
}

/// If a #PF in the hypervisor hit the guest-copy instruction, resume at its fixup.
pub fn fixup(f: &mut TrapFrame) -> bool {
    let (insn, fix) = (
        &raw const guest_copy_insn as u64,
        &raw const guest_copy_fixup as u64,
    );
    if f.rip == insn {
        f.rip = fix;
        true
    } else {
        false
    }
}
