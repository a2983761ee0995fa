//! The few instructions a PV kernel executes directly, and fault "probes" for test kernels:
//! each probe executes exactly one faulting instruction and reports where it is, so a trap
//! hook can check the bounced frame and resume after it.

use core::arch::asm;

/// Read the time-stamp counter (Xen PV guests may execute `rdtsc`; ABI.md §3.4).
pub fn rdtsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: `rdtsc` only writes EDX:EAX; no memory or stack effects.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Spin-loop hint.
pub fn pause() {
    core::hint::spin_loop();
}

/// Where a probe's faulting instruction is and how long it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultSite {
    /// Address of the faulting instruction.
    pub rip: u64,
    /// Its length in bytes (what a handler adds to RIP to skip it).
    pub len: u64,
}

/// Execute `ud2` (#UD, vector 6, a fault: RIP = the instruction). A trap hook must move RIP
/// past it (2 bytes) or the probe never returns.
pub fn probe_ud2() -> FaultSite {
    let site: u64;
    // SAFETY: executes `ud2`; the caller's trap hook resumes after it. No memory is touched.
    unsafe {
        asm!(
            "lea {s}, [rip + 2f]",
            "2: ud2",
            s = out(reg) site,
            options(nostack),
        );
    }
    FaultSite { rip: site, len: 2 }
}

/// Execute `int3` (#BP, vector 3, a trap: the frame's RIP is already past it).
pub fn probe_int3() -> FaultSite {
    let site: u64;
    // SAFETY: `int3` bounces to vector 3 and returns to the next instruction.
    unsafe {
        asm!(
            "lea {s}, [rip + 2f]",
            "2: int3",
            s = out(reg) site,
            options(nostack),
        );
    }
    FaultSite { rip: site, len: 1 }
}

/// Divide by zero with `div rcx` (48 f7 f1; #DE, vector 0, a fault).
pub fn probe_divide_error() -> FaultSite {
    let site: u64;
    // SAFETY: `div rcx` with RCX = 0 faults before writing RAX/RDX; the hook skips it. The
    // registers are declared clobbered anyway.
    unsafe {
        asm!(
            "lea {s}, [rip + 2f]",
            "xor ecx, ecx",
            "xor eax, eax",
            "xor edx, edx",
            "2: .byte 0x48, 0xf7, 0xf1",
            s = out(reg) site,
            out("rax") _,
            out("rdx") _,
            out("rcx") _,
            options(nostack),
        );
    }
    FaultSite { rip: site, len: 3 }
}

/// Execute `hlt` (f4): privileged, not emulated by Xen for PV guests → #GP(0), vector 13.
pub fn probe_hlt() -> FaultSite {
    let site: u64;
    // SAFETY: `hlt` at CPL 3 raises #GP before doing anything; the hook skips it.
    unsafe {
        asm!(
            "lea {s}, [rip + 2f]",
            "2: hlt",
            s = out(reg) site,
            options(nostack),
        );
    }
    FaultSite { rip: site, len: 1 }
}

/// Load from a non-canonical address (`mov rax, [rax]`, 48 8b 00) → #GP(0), vector 13.
pub fn probe_non_canonical_load() -> FaultSite {
    let site: u64;
    // SAFETY: the access to a non-canonical address faults before any memory is read.
    unsafe {
        asm!(
            "lea {s}, [rip + 2f]",
            "mov rax, {a}",
            "2: .byte 0x48, 0x8b, 0x00",
            s = out(reg) site,
            a = in(reg) 0x8000_0000_0000_0000u64,
            out("rax") _,
            options(nostack),
        );
    }
    FaultSite { rip: site, len: 3 }
}

/// Store to `addr` (`mov [rax], rcx`, 48 89 08) expecting a #PF (vector 14).
///
/// The address must not be mapped: it is checked to lie in the lower canonical half, which
/// rxen's own PV kernels never map (they live at `VIRT_BASE` 0xffffffff80000000). Returns
/// `None` (without touching memory) for any other address.
pub fn probe_page_fault_write(addr: u64) -> Option<FaultSite> {
    if addr == 0 || addr >= 0x0000_8000_0000_0000 {
        return None;
    }
    let site: u64;
    // SAFETY: `addr` is in the lower half, where our kernels have no mappings, so the store
    // faults and the hook skips it; nothing is written.
    unsafe {
        asm!(
            "lea {s}, [rip + 2f]",
            "mov rax, {a}",
            "2: .byte 0x48, 0x89, 0x08",
            s = out(reg) site,
            a = in(reg) addr,
            out("rax") _,
            in("rcx") 0u64,
            options(nostack),
        );
    }
    Some(FaultSite { rip: site, len: 3 })
}
