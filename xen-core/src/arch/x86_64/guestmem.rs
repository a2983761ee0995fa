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
    fn guest_copy_words(dst: *mut u8, src: *const u8, len: usize) -> usize;
    static guest_copy_words_q: u8;
    static guest_copy_words_qfix: u8;
    static guest_copy_words_b: u8;
    static guest_copy_words_done: u8;
}

// `size_t guest_copy_words(void *dst, const void *src, size_t len)`: as `guest_copy`
// (returns the number of bytes NOT copied), but moves eight bytes per iteration and the
// tail byte-wise: hypercall arguments are arrays of 8-byte aligned structures, and a
// byte-wise `rep movsb` costs one iteration per byte. A #PF on either string instruction
// resumes at its fixup ([`fixup`]), which returns what is left: `rcx` words plus the
// `rdx` tail bytes after `rep movsq`, `rcx` bytes after `rep movsb`.
core::arch::global_asm!(
    ".balign 16",
    ".global guest_copy_words",
    ".global guest_copy_words_q",
    ".global guest_copy_words_qfix",
    ".global guest_copy_words_b",
    ".global guest_copy_words_done",
    "guest_copy_words:",
    "    mov rcx, rdx",
    "    shr rcx, 3",
    "    and edx, 7",
    "guest_copy_words_q:",
    "    rep movsq",
    "    mov rcx, rdx",
    "guest_copy_words_b:",
    "    rep movsb",
    "guest_copy_words_done:",
    "    mov rax, rcx",
    "    ret",
    "guest_copy_words_qfix:",
    "    lea rax, [rdx + rcx * 8]",
    "    ret",
);

/// Copies `len` bytes between guest and hypervisor memory; true if all were copied.
///
/// # Safety
///
/// One of `dst`/`src` is a checked guest range of the current address space (faults on
/// it are recovered by [`fixup`]), the other `len` bytes of hypervisor memory valid for
/// the access.
unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) -> bool {
    // SAFETY: as the caller guarantees; DF is clear in the hypervisor (SysV ABI).
    let left = unsafe {
        if len >= 8 {
            guest_copy_words(dst, src, len)
        } else {
            guest_copy(dst, src, len)
        }
    };
    left == 0
}

pub use crate::guest_addr::is_guest_range;

/// Copies from the current guest's memory.
pub fn copy_from_guest(va: u64, out: &mut [u8]) -> Result<(), Errno> {
    if !is_guest_range(va, out.len()) {
        return Err(Errno::EFAULT);
    }
    // SAFETY: the source range is guest memory in the current address space (checked
    // above); a fault is recovered by the fixup and reported as bytes left over.
    if unsafe { copy(out.as_mut_ptr(), va as *const u8, out.len()) } {
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
    if unsafe { copy(va as *mut u8, data.as_ptr(), data.len()) } {
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
    let fixups = [
        (
            &raw const guest_copy_insn as u64,
            &raw const guest_copy_fixup as u64,
        ),
        (
            &raw const guest_copy_words_q as u64,
            &raw const guest_copy_words_qfix as u64,
        ),
        (
            &raw const guest_copy_words_b as u64,
            &raw const guest_copy_words_done as u64,
        ),
    ];
    match fixups.iter().find(|&&(insn, _)| insn == f.rip) {
        Some(&(_, fix)) => {
            f.rip = fix;
            true
        }
        None => false,
    }
}
