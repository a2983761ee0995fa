//! `cpu`: guest-entry paths of issue 2 part 4 that stay in guest-kernel mode.
//! * `cpuid` through Xen's forced-emulation prefix: Xen's leaves 0x40000000 (signature
//!   "XenVMMXenVMM", max leaf ≥ 0x40000002) and 0x40000001 (version 4.19), emulated by the
//!   hypervisor without reaching our #UD handler (Xen `pv/emul-inv-op.c`).
//! * `fpu_taskswitch`: with the virtual CR0.TS set an x87 instruction raises #NM at the
//!   instruction; Xen clears TS itself when it delivers the #NM (`do_device_not_available`:
//!   "Xen's ABI with PV guests always clears TS on an #NM"), so a handler that returns
//!   without clearing it sees a single #NM.
//! * `set_segment_base`: FS and kernel GS bases (`mov rax, fs:[0]` / `gs:[0]`), -EINVAL for
//!   non-canonical bases and unknown `which` (Xen `pv/misc-hypercalls.c`).
//! * `int $n`: a DPL-3 trap-table entry (0x80) gets the software interrupt with RIP after
//!   the instruction and CS RPL 0 (kernel mode); a DPL-0 entry (0x81) gets #GP with error
//!   code `(0x81 << 3) | 2` at the instruction (Xen `do_general_protection`); from kernel
//!   mode a DPL-1 entry already suffices (Xen `permit_softint`: DPL >= 1 in guest-kernel
//!   mode, 3 in user mode).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pv_guest::arch::cpu::{self, FaultSite};
use pv_guest::arch::TrapFrame;
use pv_guest::xen_abi::xen::{SEGBASE_FS, SEGBASE_GS_KERNEL, SEGBASE_GS_USER, XEN_CPUID_SIGNATURE};
use pv_guest::xen_abi::Errno;
use pv_guest::{hypercall as hc, traps};

use crate::report::{err, rc, Rc, Report};

// ---------------------------------------------------------------------------------------
// Hooks. Each records what it saw in atomics; the checks run after the probe returned.

static UD_SEEN: AtomicU64 = AtomicU64::new(0);

/// #UD: must not be reached by the forced-emulation prefix. Skip the 7 bytes so a
/// hypervisor that does not emulate it cannot loop.
fn ud_hook(f: &mut TrapFrame) -> bool {
    UD_SEEN.fetch_add(1, Ordering::SeqCst);
    f.rip = f.rip.wrapping_add(7);
    true
}

static NM_COUNT: AtomicU64 = AtomicU64::new(0);
static NM_RIP: AtomicU64 = AtomicU64::new(0);
/// The #NM hook clears TS itself (fpu_taskswitch(0)) on the first #NM.
static NM_CLEARS: AtomicBool = AtomicBool::new(true);
static NM_CLEAR_RC: AtomicU64 = AtomicU64::new(0);

/// #NM: count and return to re-execute the instruction. Clears TS on the first #NM only if
/// asked to; always on a second one, so a hypervisor that leaves TS set cannot loop.
fn nm_hook(f: &mut TrapFrame) -> bool {
    let n = NM_COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    NM_RIP.store(f.rip, Ordering::SeqCst);
    if n >= 2 || NM_CLEARS.load(Ordering::SeqCst) {
        let r = hc::fpu_taskswitch(false);
        NM_CLEAR_RC.store(rc(r).0 as u64, Ordering::SeqCst);
    }
    true
}

static SOFT_SEEN: AtomicU64 = AtomicU64::new(0);
static SOFT_VECTOR: AtomicU64 = AtomicU64::new(0);
static SOFT_RIP: AtomicU64 = AtomicU64::new(0);
static SOFT_CS: AtomicU64 = AtomicU64::new(0);

/// `int $0x80` / `int $0x81` delivered to their stubs: a trap, RIP already after it.
fn soft_hook(f: &mut TrapFrame) -> bool {
    SOFT_SEEN.fetch_add(1, Ordering::SeqCst);
    SOFT_VECTOR.store(f.vector, Ordering::SeqCst);
    SOFT_RIP.store(f.rip, Ordering::SeqCst);
    SOFT_CS.store(f.cs, Ordering::SeqCst);
    true
}

static GP_SEEN: AtomicU64 = AtomicU64::new(0);
static GP_ERROR: AtomicU64 = AtomicU64::new(0);
static GP_RIP: AtomicU64 = AtomicU64::new(0);

/// #GP from `int $0x81` (DPL 0): a fault at the 2-byte instruction; skip it.
fn gp_hook(f: &mut TrapFrame) -> bool {
    GP_SEEN.fetch_add(1, Ordering::SeqCst);
    GP_ERROR.store(f.error_code, Ordering::SeqCst);
    GP_RIP.store(f.rip, Ordering::SeqCst);
    f.rip = f.rip.wrapping_add(2);
    true
}

pub fn run(r: &mut Report) {
    super::setup(r);
    cpuid(r);
    fpu(r);
    segment_bases(r);
    soft_ints(r);
    msrs(r);
}

static MSR_WORD: AtomicU64 = AtomicU64::new(0x6d73_725f_776f_7264);

/// `wrmsr`/`rdmsr` from the guest kernel: Xen emulates the segment-base MSRs (Linux's
/// first instructions write MSR_GS_BASE) and raises #GP(0) for MSRs it does not know.
fn msrs(r: &mut Report) {
    const MSR_GS_BASE: u32 = 0xc000_0101;
    traps::set_hook(13, Some(gp_hook));
    GP_SEEN.store(0, Ordering::SeqCst);
    let addr = MSR_WORD.as_ptr() as u64;
    cpu::wrmsr(MSR_GS_BASE, addr);
    r.eq(
        "wrmsr(GS_BASE) emulated: no #GP",
        GP_SEEN.load(Ordering::SeqCst),
        0,
    );
    r.eq(
        "mov rax, gs:[0] after wrmsr(GS_BASE)",
        cpu::read_gs_word(),
        MSR_WORD.load(Ordering::SeqCst),
    );
    r.eq(
        "rdmsr(GS_BASE) reads it back",
        cpu::rdmsr(MSR_GS_BASE),
        addr,
    );
    let _ = cpu::rdmsr(0x0000_1234);
    r.eq(
        "rdmsr(unknown MSR) → #GP",
        GP_SEEN.load(Ordering::SeqCst),
        1,
    );
    r.eq("... with error code 0", GP_ERROR.load(Ordering::SeqCst), 0);
    cpu::wrmsr(MSR_GS_BASE, 0x8000_0000_0000_0000);
    r.eq(
        "wrmsr(GS_BASE, non-canonical) → #GP",
        GP_SEEN.load(Ordering::SeqCst),
        2,
    );
    traps::set_hook(13, None);
}

fn sig_word(i: usize) -> u32 {
    let s = XEN_CPUID_SIGNATURE;
    u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]])
}

fn cpuid(r: &mut Report) {
    traps::set_hook(6, Some(ud_hook));
    UD_SEEN.store(0, Ordering::SeqCst);
    let l0 = cpu::cpuid_forced(0x4000_0000, 0);
    r.eq(
        "forced cpuid 0x40000000: ebx/ecx/edx = \"XenVMMXenVMM\"",
        [l0[1], l0[2], l0[3]],
        [sig_word(0), sig_word(4), sig_word(8)],
    );
    r.check(
        (0x4000_0002..0x4000_0100).contains(&l0[0]),
        "forced cpuid 0x40000000: eax = max leaf >= 0x40000002",
        l0[0],
        ">= 0x40000002",
    );
    let l1 = cpu::cpuid_forced(0x4000_0001, 0);
    r.eq(
        "forced cpuid 0x40000001: eax = version 4.19",
        l1[0],
        (4 << 16) | 19,
    );
    r.eq(
        "forced cpuid emulated by the hypervisor (our #UD hook not called)",
        UD_SEEN.load(Ordering::SeqCst),
        0,
    );
    traps::set_hook(6, None);
}

/// `fnop` with TS set: one #NM at the instruction, then it completes.
fn one_nm(r: &mut Report, what: &str, handler_clears: bool) {
    NM_COUNT.store(0, Ordering::SeqCst);
    NM_RIP.store(0, Ordering::SeqCst);
    NM_CLEAR_RC.store(0, Ordering::SeqCst);
    NM_CLEARS.store(handler_clears, Ordering::SeqCst);
    r.eq("fpu_taskswitch(1)", rc(hc::fpu_taskswitch(true)), Rc(0));
    let site = cpu::probe_fnop();
    // We are here: the instruction completed after the handler returned.
    r.eq(what, NM_COUNT.load(Ordering::SeqCst), 1);
    r.eq(
        "#NM is a fault: frame RIP = the x87 instruction",
        NM_RIP.load(Ordering::SeqCst),
        site.rip,
    );
    r.eq(
        "fpu_taskswitch(0) returns 0 (from the #NM handler)",
        Rc(NM_CLEAR_RC.load(Ordering::SeqCst) as i64),
        Rc(0),
    );
}

fn fpu(r: &mut Report) {
    traps::set_hook(7, Some(nm_hook));
    one_nm(
        r,
        "fpu_taskswitch(1): x87 instruction → one #NM; handler clears TS and it re-executes",
        true,
    );
    // TS is clear now: no #NM.
    NM_COUNT.store(0, Ordering::SeqCst);
    cpu::probe_fnop();
    r.eq(
        "fpu_taskswitch(0): x87 instruction without #NM",
        NM_COUNT.load(Ordering::SeqCst),
        0,
    );
    r.eq(
        "fpu_taskswitch(0) again",
        rc(hc::fpu_taskswitch(false)),
        Rc(0),
    );
    NM_COUNT.store(0, Ordering::SeqCst);
    cpu::probe_fnop();
    r.eq(
        "x87 instruction with TS clear: no #NM",
        NM_COUNT.load(Ordering::SeqCst),
        0,
    );
    // Xen clears the virtual TS when it delivers #NM: returning without fpu_taskswitch(0)
    // re-executes the instruction without a second #NM (our hook clears TS on a second one
    // so that a hypervisor that does not cannot loop).
    one_nm(
        r,
        "#NM delivery clears the virtual TS (Xen ABI): handler returns without clearing, no 2nd #NM",
        false,
    );
    // Leave TS clear whatever happened.
    let _ = hc::fpu_taskswitch(false);
    traps::set_hook(7, None);
}

/// Values read back through FS:0 and GS:0.
static FS_WORD: AtomicU64 = AtomicU64::new(0x1122_3344_5566_7788);
static GS_WORD: AtomicU64 = AtomicU64::new(0x8877_6655_4433_2211);

const NON_CANONICAL: u64 = 0x8000_0000_0000_0000;

fn segment_bases(r: &mut Report) {
    let fs = FS_WORD.as_ptr() as u64;
    if r.eq(
        "set_segment_base(SEGBASE_FS, &static)",
        rc(hc::set_segment_base(SEGBASE_FS, fs)),
        Rc(0),
    ) {
        r.eq(
            "mov rax, fs:[0] reads the static",
            cpu::read_fs_word(),
            FS_WORD.load(Ordering::SeqCst),
        );
    }
    let gs = GS_WORD.as_ptr() as u64;
    if r.eq(
        "set_segment_base(SEGBASE_GS_KERNEL, &static)",
        rc(hc::set_segment_base(SEGBASE_GS_KERNEL, gs)),
        Rc(0),
    ) {
        r.eq(
            "mov rax, gs:[0] reads the static",
            cpu::read_gs_word(),
            GS_WORD.load(Ordering::SeqCst),
        );
    }
    for (which, name) in [
        (SEGBASE_FS, "set_segment_base(SEGBASE_FS, non-canonical)"),
        (
            SEGBASE_GS_USER,
            "set_segment_base(SEGBASE_GS_USER, non-canonical)",
        ),
        (
            SEGBASE_GS_KERNEL,
            "set_segment_base(SEGBASE_GS_KERNEL, non-canonical)",
        ),
    ] {
        r.eq(
            name,
            rc(hc::set_segment_base(which, NON_CANONICAL)),
            err(Errno::EINVAL),
        );
    }
    r.eq(
        "set_segment_base(9 (unknown), 0)",
        rc(hc::set_segment_base(9, 0)),
        err(Errno::EINVAL),
    );
    // The failed calls left the bases alone.
    r.eq(
        "FS base unchanged by the refused calls",
        cpu::read_fs_word(),
        FS_WORD.load(Ordering::SeqCst),
    );
    r.eq(
        "set_segment_base(SEGBASE_FS, 0)",
        rc(hc::set_segment_base(SEGBASE_FS, 0)),
        Rc(0),
    );
    r.eq(
        "set_segment_base(SEGBASE_GS_KERNEL, 0)",
        rc(hc::set_segment_base(SEGBASE_GS_KERNEL, 0)),
        Rc(0),
    );
}

/// Where `int $n` must arrive.
enum Arrives {
    /// At its trap-table entry (a trap: RIP after the instruction, CS RPL 0 from kernel).
    Handler,
    /// As #GP(`(n << 3) | 2`) at the instruction.
    GeneralProtection,
}

fn one_soft_int(
    r: &mut Report,
    what: &str,
    vector: u64,
    arrives: Arrives,
    probe: impl FnOnce() -> Option<FaultSite>,
) {
    SOFT_SEEN.store(0, Ordering::SeqCst);
    GP_SEEN.store(0, Ordering::SeqCst);
    let Some(site) = probe() else {
        r.fail(what, "probe refused", "executed");
        return;
    };
    let seen = (
        SOFT_SEEN.load(Ordering::SeqCst),
        GP_SEEN.load(Ordering::SeqCst),
    );
    match arrives {
        Arrives::Handler => {
            if r.eq(what, seen, (1, 0)) {
                r.eq(
                    "int $n frame: vector, RIP after the instruction",
                    (
                        SOFT_VECTOR.load(Ordering::SeqCst),
                        SOFT_RIP.load(Ordering::SeqCst),
                    ),
                    (vector, site.rip + site.len),
                );
                let cs = SOFT_CS.load(Ordering::SeqCst);
                r.check(
                    cs & 3 == 0,
                    "int $n frame: CS has RPL 0 (from kernel mode)",
                    cs,
                    "RPL 0",
                );
            }
        }
        Arrives::GeneralProtection => {
            if r.eq(what, seen, (0, 1)) {
                r.eq(
                    "int $n → #GP: error code (n << 3) | 2, RIP at the instruction",
                    (
                        GP_ERROR.load(Ordering::SeqCst),
                        GP_RIP.load(Ordering::SeqCst),
                    ),
                    ((vector << 3) | 2, site.rip),
                );
            }
        }
    }
}

fn soft_ints(r: &mut Report) {
    r.eq(
        "set_trap_table(0x80, DPL 3)",
        rc(traps::install_soft_int(0x80, 3)),
        Rc(0),
    );
    r.eq(
        "set_trap_table(0x81, DPL 0)",
        rc(traps::install_soft_int(0x81, 0)),
        Rc(0),
    );
    traps::set_soft_int_hook(0x80, Some(soft_hook));
    traps::set_soft_int_hook(0x81, Some(soft_hook));
    traps::set_hook(13, Some(gp_hook));
    one_soft_int(
        r,
        "int $0x80 (DPL 3) → its handler",
        0x80,
        Arrives::Handler,
        cpu::probe_soft_int::<0x80>,
    );
    one_soft_int(
        r,
        "int $0x81 (DPL 0) → #GP, not its handler",
        0x81,
        Arrives::GeneralProtection,
        cpu::probe_soft_int::<0x81>,
    );
    // From guest-kernel mode Xen accepts any DPL >= 1 (`permit_softint`).
    r.eq(
        "set_trap_table(0x81, DPL 1)",
        rc(traps::install_soft_int(0x81, 1)),
        Rc(0),
    );
    one_soft_int(
        r,
        "int $0x81 (DPL 1) from kernel mode → its handler (Xen: DPL >= 1 suffices)",
        0x81,
        Arrives::Handler,
        cpu::probe_soft_int::<0x81>,
    );
    traps::set_hook(13, None);
    traps::set_soft_int_hook(0x80, None);
    traps::set_soft_int_hook(0x81, None);
}
