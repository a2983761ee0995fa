//! `userspace`: guest-user mode and the ways back into the guest kernel (issue 2 part 4,
//! ABI.md §1.9-1.11).
//! * `MMUEXT_NEW_USER_BASEPTR` accepts only one of our L4 page tables (-EINVAL for a data
//!   page: Xen `get_page_and_type_from_mfn(PGT_root_page_table)`); we use the kernel's own
//!   L4, as XTF does.
//! * `stack_switch` to a dedicated kernel stack and the syscall callback registered with
//!   `CALLBACKF_mask_events`.
//! * The `iret` hypercall to CS 0xe033 / SS 0xe02b enters user mode, where the runtime's
//!   probe program (`pv_guest::arch::user`) executes `syscall` (RAX 0x1234), `int $0x80`,
//!   a load from an unmapped address, and a final `syscall` that brings us back.
//! * Each entry must arrive on the kernel stack set by `stack_switch` (the frame right below
//!   its top), with Xen's frame: the syscall callback with RIP after the `syscall`, the
//!   user's RSP and the flat user selectors, events masked; `int $0x80` and the #PF with the
//!   user's CS (RPL 3); the #PF error code with the U bit and CR2 in vcpu_info.
//!
//! Hypercalls are impossible from user mode (a user `syscall` goes to the callback), so the
//! hooks only record; all checks run in kernel mode afterwards.

use core::ptr::addr_of;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pv_guest::arch::user::{self, USER_PROBE_EXIT, USER_PROBE_PING};
use pv_guest::arch::{self, TrapFrame};
use pv_guest::xen_abi::callback::{CALLBACKF_MASK_EVENTS, CALLBACKTYPE_SYSCALL};
use pv_guest::xen_abi::xen::{FLAT_USER_CS, FLAT_USER_SS};
use pv_guest::xen_abi::Errno;
use pv_guest::{hypercall as hc, println, shared, start, traps, StartInfo};

use crate::report::{err, rc, Rc, Report};

/// Lower-half address nothing maps: the probe's load faults there.
const PF_ADDR: u64 = 0x0000_5a5a_5a5a_6000;

/// What a hook saw of one entry from user mode.
struct Seen {
    count: AtomicU64,
    rip: AtomicU64,
    cs: AtomicU64,
    ss: AtomicU64,
    rsp: AtomicU64,
    rax: AtomicU64,
    rcx: AtomicU64,
    error: AtomicU64,
    /// Address of the lowest word Xen wrote (the RCX slot).
    frame: AtomicU64,
    masked: AtomicBool,
    cr2: AtomicU64,
}

impl Seen {
    const fn new() -> Seen {
        Seen {
            count: AtomicU64::new(0),
            rip: AtomicU64::new(0),
            cs: AtomicU64::new(0),
            ss: AtomicU64::new(0),
            rsp: AtomicU64::new(0),
            rax: AtomicU64::new(0),
            rcx: AtomicU64::new(0),
            error: AtomicU64::new(0),
            frame: AtomicU64::new(0),
            masked: AtomicBool::new(false),
            cr2: AtomicU64::new(0),
        }
    }

    fn record(&self, f: &TrapFrame) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.rip.store(f.rip, Ordering::SeqCst);
        self.cs.store(f.cs & 0xffff, Ordering::SeqCst);
        self.ss.store(f.ss, Ordering::SeqCst);
        self.rsp.store(f.rsp, Ordering::SeqCst);
        self.rax.store(f.rax, Ordering::SeqCst);
        self.rcx.store(f.rcx, Ordering::SeqCst);
        self.error.store(f.error_code, Ordering::SeqCst);
        // The stubs leave RIP..SS where Xen wrote them. Below RIP Xen put the RCX and R11
        // slots and, for exceptions that have one, the error code.
        let rip_slot = addr_of!(f.rip) as u64;
        let has_error = u8::try_from(f.vector).is_ok_and(arch::vector_has_error_code);
        let words_below = if has_error { 3 } else { 2 };
        self.frame
            .store(rip_slot - 8 * words_below, Ordering::SeqCst);
        self.masked.store(shared::upcall_mask(), Ordering::SeqCst);
        self.cr2.store(shared::cr2(), Ordering::SeqCst);
    }
}

fn ld(a: &AtomicU64) -> u64 {
    a.load(Ordering::SeqCst)
}

static PING: Seen = Seen::new();
static INT80: Seen = Seen::new();
static PF: Seen = Seen::new();
static EXIT: Seen = Seen::new();
static UNEXPECTED: AtomicU64 = AtomicU64::new(0);

/// The syscall callback: the ping returns to user mode; the exit resumes the kernel.
fn syscall_hook(f: &mut TrapFrame) -> bool {
    match f.rax {
        USER_PROBE_PING => {
            PING.record(f);
            true
        }
        USER_PROBE_EXIT => {
            EXIT.record(f);
            user::return_to_kernel(f, USER_PROBE_EXIT)
        }
        _ => {
            UNEXPECTED.fetch_add(1, Ordering::SeqCst);
            user::return_to_kernel(f, f.rax)
        }
    }
}

/// `int $0x80` from user mode: a trap, back to user mode after it.
fn int80_hook(f: &mut TrapFrame) -> bool {
    INT80.record(f);
    true
}

/// The probe's load: skip it and go back to user mode. Anything else is fatal.
fn pf_hook(f: &mut TrapFrame) -> bool {
    let sites = user::probe_sites();
    if f.rip != sites.after_int80 {
        return false;
    }
    PF.record(f);
    f.rip += sites.load_len;
    true
}

/// MFN of a VA in our initial mapping, through the p2m list.
fn mfn_of(va: u64) -> Option<u64> {
    start::va_to_mfn(va)
}

pub fn run(r: &mut Report) {
    super::setup(r);
    let Some(si) = start::start_info() else {
        r.fail("start_info", "missing", "present");
        return;
    };
    if !user_page_table(r, si) {
        return;
    }
    r.eq(
        "stack_switch(FLAT_KERNEL_SS, dedicated kernel stack)",
        rc(user::switch_kernel_stack()),
        Rc(0),
    );
    let cb = hc::callback_register(
        CALLBACKTYPE_SYSCALL,
        CALLBACKF_MASK_EVENTS,
        user::syscall_entry_va(),
    );
    r.eq(
        "callback_op register syscall (CALLBACKF_mask_events)",
        rc(cb),
        Rc(0),
    );
    r.eq(
        "set_trap_table(0x80, DPL 3)",
        rc(traps::install_soft_int(0x80, 3)),
        Rc(0),
    );
    traps::set_syscall_hook(Some(syscall_hook));
    traps::set_soft_int_hook(0x80, Some(int80_hook));
    traps::set_hook(14, Some(pf_hook));

    println!("userspace: entering user mode");
    let result = user::run_probe(PF_ADDR);
    traps::set_hook(14, None);
    traps::set_soft_int_hook(0x80, None);
    traps::set_syscall_hook(None);
    // Printing works again: we are back in kernel mode.
    println!("userspace: back in kernel mode");
    r.eq(
        "iret to user mode; final user syscall returns to the kernel",
        result,
        Some(USER_PROBE_EXIT),
    );
    r.eq(
        "no unexpected user syscall",
        UNEXPECTED.load(Ordering::SeqCst),
        0,
    );
    r.check(
        shared::upcall_mask(),
        "kernel resumes with its event mask (masked)",
        false,
        true,
    );
    check_entries(r);
}

/// `MMUEXT_NEW_USER_BASEPTR`: a data page is refused, our L4 accepted.
fn user_page_table(r: &mut Report, si: &StartInfo) -> bool {
    let Some(data_mfn) = mfn_of(arch::spare_page_va()) else {
        r.fail("mfn of a data page", "not in the p2m", "an mfn");
        return false;
    };
    r.eq(
        "mmuext_op NEW_USER_BASEPTR(data page mfn)",
        rc(hc::mmuext_new_user_baseptr(data_mfn)),
        err(Errno::EINVAL),
    );
    let Some(l4_mfn) = mfn_of(si.pt_base) else {
        r.fail("mfn of pt_base", "not in the p2m", "an mfn");
        return false;
    };
    r.eq(
        "mmuext_op NEW_USER_BASEPTR(kernel L4 mfn)",
        rc(hc::mmuext_new_user_baseptr(l4_mfn)),
        Rc(0),
    )
}

fn check_entries(r: &mut Report) {
    let sites = user::probe_sites();
    let top = user::kernel_stack_top();
    let user_sp = user::user_stack_top();
    let user_cs = u64::from(FLAT_USER_CS);
    let user_ss = u64::from(FLAT_USER_SS);

    // The ping syscall.
    let s = &PING;
    if r.eq("user syscall → syscall callback", ld(&s.count), 1) {
        r.eq(
            "syscall callback: RAX = 0x1234",
            ld(&s.rax),
            USER_PROBE_PING,
        );
        r.eq(
            "syscall callback frame right below the stack_switch top (7 words)",
            top - ld(&s.frame),
            56,
        );
        r.eq(
            "syscall callback frame RIP = after the syscall (also in the RCX slot)",
            (ld(&s.rip), ld(&s.rcx)),
            (sites.after_syscall, sites.after_syscall),
        );
        r.eq(
            "syscall callback frame RSP = the user's",
            ld(&s.rsp),
            user_sp,
        );
        r.eq(
            "syscall callback frame CS/SS = 0xe033/0xe02b",
            (ld(&s.cs), ld(&s.ss)),
            (user_cs, user_ss),
        );
        r.check(
            s.masked.load(Ordering::SeqCst),
            "syscall callback entered with events masked (CALLBACKF_mask_events)",
            false,
            true,
        );
    }

    // int $0x80 after the iret back to user mode.
    let s = &INT80;
    if r.eq("user int $0x80 (DPL 3) → its handler", ld(&s.count), 1) {
        r.eq(
            "int $0x80 frame on the kernel stack (7 words below the top)",
            top - ld(&s.frame),
            56,
        );
        r.eq(
            "int $0x80 frame RIP after the instruction",
            ld(&s.rip),
            sites.after_int80,
        );
        r.eq(
            "int $0x80 frame CS = user CS (RPL 3), RSP = the user's",
            (ld(&s.cs), ld(&s.rsp)),
            (user_cs, user_sp),
        );
    }

    // The #PF of the user load.
    let s = &PF;
    if r.eq("user load of an unmapped page → #PF", ld(&s.count), 1) {
        r.eq(
            "#PF frame on the kernel stack (8 words with the error code)",
            top - ld(&s.frame),
            64,
        );
        r.eq(
            "#PF error code 4 (user, read, not present)",
            ld(&s.error),
            4,
        );
        r.eq("#PF cr2 (vcpu_info.arch.cr2)", ld(&s.cr2), PF_ADDR);
        r.eq("#PF frame CS = user CS (RPL 3)", ld(&s.cs) & 3, 3);
    }

    // The exit syscall.
    let s = &EXIT;
    if r.eq("final user syscall → syscall callback", ld(&s.count), 1) {
        r.eq(
            "final syscall frame RIP and RSP",
            (ld(&s.rip), ld(&s.rsp)),
            (sites.after_exit, user_sp),
        );
    }
}
