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

/// `cpuid` through Xen's forced-emulation prefix (`ud2; .ascii "xen"; cpuid`, ABI.md §3.4):
/// the hypervisor recognises the 7 bytes at the #UD, writes EAX-EDX for its guest CPUID
/// policy and resumes after them. Returns `[eax, ebx, ecx, edx]`.
///
/// A hypervisor that does not emulate it bounces #UD to the kernel's handler (or crashes the
/// domain if there is none); a handler that skips the 7 bytes makes this return the leaf and
/// subleaf in EAX/ECX and zero in EBX/EDX.
pub fn cpuid_forced(leaf: u32, subleaf: u32) -> [u32; 4] {
    let (a, b, c, d): (u32, u32, u32, u32);
    // SAFETY: the sequence only writes EAX-EDX (declared; RBX is saved and restored through
    // a scratch register because LLVM reserves it). No memory or stack effects.
    unsafe {
        asm!(
            "mov {t:r}, rbx",
            "xor ebx, ebx",
            "xor edx, edx",
            ".byte 0x0f, 0x0b, 0x78, 0x65, 0x6e",
            "cpuid",
            "xchg {t:r}, rbx",
            t = out(reg) b,
            inlateout("eax") leaf => a,
            inlateout("ecx") subleaf => c,
            out("edx") d,
            options(nomem, nostack),
        );
    }
    [a, b, c, d]
}

/// Execute the x87 instruction `fnop` (d9 d0). With the virtual CR0.TS set
/// (`fpu_taskswitch(1)`) it raises #NM (vector 7, a fault: RIP = the instruction); returning
/// from the handler re-executes it.
pub fn probe_fnop() -> FaultSite {
    let site: u64;
    // SAFETY: `fnop` changes no register or memory visible to Rust (only the x87 FIP/FDP
    // bookkeeping); a #NM is handled by the kernel's trap hook.
    unsafe {
        asm!(
            "lea {s}, [rip + 2f]",
            "2: fnop",
            s = out(reg) site,
            options(nostack),
        );
    }
    FaultSite { rip: site, len: 2 }
}

/// Read the quadword at FS:0 (`mov rax, fs:[0]`), i.e. at the FS base
/// (`set_segment_base(SEGBASE_FS, ..)`). An unmapped base raises #PF to the kernel's handler.
pub fn read_fs_word() -> u64 {
    let v: u64;
    // SAFETY: a plain 8-byte load through FS; no Rust reference is created, and nothing of
    // ours lives at an address the load could change.
    unsafe {
        asm!("mov {v}, qword ptr fs:[0]", v = out(reg) v, options(nostack, readonly));
    }
    v
}

/// Read the quadword at GS:0 (`mov rax, gs:[0]`): the current GS base (in kernel mode the
/// one of `SEGBASE_GS_KERNEL`).
pub fn read_gs_word() -> u64 {
    let v: u64;
    // SAFETY: as `read_fs_word`, through GS.
    unsafe {
        asm!("mov {v}, qword ptr gs:[0]", v = out(reg) v, options(nostack, readonly));
    }
    v
}

/// Execute `int $N` (cd NN, 2 bytes). Xen delivers it to trap-table entry N if the entry's
/// DPL permits (≥ 1 from guest-kernel mode, 3 from user mode; RIP after the instruction),
/// else as #GP with error code `(N << 3) | 2` at the instruction. `int3`/`into` have their
/// own probes; N = 3 is refused here with `None`.
pub fn probe_soft_int<const N: u8>() -> Option<FaultSite> {
    if N == 3 {
        return None;
    }
    let site: u64;
    // SAFETY: a software interrupt bounced by the hypervisor to the kernel's handler (or as
    // #GP); the handler resumes after it. Raw bytes keep the 2-byte `cd NN` encoding.
    unsafe {
        asm!(
            "lea {s}, [rip + 2f]",
            "2: .byte 0xcd, {n}",
            s = out(reg) site,
            n = const N,
            options(nostack),
        );
    }
    Some(FaultSite { rip: site, len: 2 })
}

/// `wrmsr` executed directly. Xen emulates it for a PV kernel for the segment-base MSRs;
/// any other MSR raises #GP(0) (a hook must skip the 2-byte instruction).
pub fn wrmsr(msr: u32, value: u64) {
    // SAFETY: at CPL 3 the instruction traps to the hypervisor, which either emulates a
    // base-MSR write (changing only this vCPU's segment bases) or bounces #GP.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack));
    }
}

/// `rdmsr` executed directly (emulated by the hypervisor for the base MSRs and EFER, #GP(0)
/// otherwise; the result is meaningless then).
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: as for `wrmsr`; reading changes nothing.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}
