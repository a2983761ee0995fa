//! The virtual IDT (`set_trap_table`, ABI.md §1.11 and §2.1): handlers for vectors 0-19
//! using Xen's bounce frame, per-vector hooks for kernels, and the default policy for an
//! unexpected exception: print it and crash the domain (`SHUTDOWN_crash`).

use spin::Mutex;
use xen_abi::xen::{TrapInfo, FLAT_KERNEL_CS};
use zerocopy::FromZeros;

use crate::arch::{
    self, hypercall, TrapFrame, NR_EXCEPTION_VECTORS, SOFT_INT_VECTORS, SYSCALL_VECTOR,
    UPCALL_VECTOR,
};

/// A per-vector hook. Return true if the exception was handled (the frame, possibly
/// modified, is resumed), false to fall through to the default (crash).
pub type Hook = fn(&mut TrapFrame) -> bool;

static HOOKS: Mutex<[Option<Hook>; NR_EXCEPTION_VECTORS]> =
    Mutex::new([None; NR_EXCEPTION_VECTORS]);

/// Hooks of the extra entry points: the software-interrupt vectors ([`SOFT_INT_VECTORS`],
/// same order) and then the syscall callback.
const NR_EXTRA_HOOKS: usize = SOFT_INT_VECTORS.len() + 1;
static EXTRA_HOOKS: Mutex<[Option<Hook>; NR_EXTRA_HOOKS]> = Mutex::new([None; NR_EXTRA_HOOKS]);

/// Slot in [`EXTRA_HOOKS`] of a frame's vector number.
fn extra_slot(vector: u64) -> Option<usize> {
    if vector == SYSCALL_VECTOR {
        return Some(SOFT_INT_VECTORS.len());
    }
    SOFT_INT_VECTORS
        .iter()
        .position(|&v| u64::from(v) == vector)
}

/// Mnemonic of an exception vector.
pub fn vector_name(v: u64) -> &'static str {
    const NAMES: [&str; NR_EXCEPTION_VECTORS] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS", "#NP", "#SS",
        "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM",
    ];
    usize::try_from(v)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("#??")
}

/// The trap table for our stubs: every vector with "mask events" (flag bit 2), DPL 0,
/// except #BP and #OF with DPL 3 (as XTF does), then the terminating zero entry.
pub fn trap_table(stubs: &[u64; NR_EXCEPTION_VECTORS]) -> [TrapInfo; NR_EXCEPTION_VECTORS + 1] {
    let mut t = [TrapInfo::new_zeroed(); NR_EXCEPTION_VECTORS + 1];
    for (v, (e, &addr)) in t.iter_mut().zip(stubs.iter()).enumerate() {
        e.vector = v as u8;
        e.flags = if v == 3 || v == 4 { 3 | 4 } else { 4 };
        e.cs = FLAT_KERNEL_CS;
        e.address = addr;
    }
    t
}

/// Register our handlers for vectors 0-19 with `set_trap_table`.
pub fn install() -> hypercall::Result<u64> {
    let table = trap_table(&arch::entry_points().exceptions);
    hypercall::set_trap_table(&table)
}

/// Set (or clear) the hook of `vector` (0-19). Returns false for other vectors.
pub fn set_hook(vector: u8, hook: Option<Hook>) -> bool {
    match HOOKS.lock().get_mut(usize::from(vector)) {
        Some(slot) => {
            *slot = hook;
            true
        }
        None => false,
    }
}

/// Set (or clear) the hook of a software-interrupt vector with an entry stub (one of
/// [`SOFT_INT_VECTORS`]; the frame's vector is that number). Returns false for others.
pub fn set_soft_int_hook(vector: u8, hook: Option<Hook>) -> bool {
    match extra_slot(u64::from(vector)) {
        Some(i) if u64::from(vector) != SYSCALL_VECTOR => {
            EXTRA_HOOKS.lock()[i] = hook;
            true
        }
        _ => false,
    }
}

/// Set (or clear) the hook of the syscall callback (a guest-user `syscall`; the frame's
/// vector is [`SYSCALL_VECTOR`], RIP/RSP/RFLAGS the user's, CS/SS the flat user selectors).
pub fn set_syscall_hook(hook: Option<Hook>) {
    EXTRA_HOOKS.lock()[SOFT_INT_VECTORS.len()] = hook;
}

/// The trap-table entry routing `int $vector` to its stub: flags = `dpl & 3` | 4 (mask
/// events). None for vectors without a stub.
pub fn soft_int_trap_info(vector: u8, dpl: u8) -> Option<TrapInfo> {
    let address = arch::user::soft_int_entry_va(vector)?;
    let mut e = TrapInfo::new_zeroed();
    e.vector = vector;
    e.flags = (dpl & 3) | 4;
    e.cs = FLAT_KERNEL_CS;
    e.address = address;
    Some(e)
}

/// Register `vector` (one of [`SOFT_INT_VECTORS`]) with DPL `dpl` in the virtual IDT with
/// `set_trap_table` (only that entry changes). -EINVAL locally for vectors without a stub.
pub fn install_soft_int(vector: u8, dpl: u8) -> hypercall::Result<u64> {
    let e =
        soft_int_trap_info(vector, dpl).ok_or(hypercall::Error::local(xen_abi::Errno::EINVAL))?;
    hypercall::set_trap_table(&[e, TrapInfo::new_zeroed()])
}

/// Entry from the assembly stubs.
pub(crate) fn dispatch(frame: &mut TrapFrame) {
    if frame.vector == UPCALL_VECTOR {
        crate::events::upcall(frame);
    } else {
        // try_lock: a fault while a hook is being registered falls through to the default.
        let hook = match extra_slot(frame.vector) {
            Some(i) => EXTRA_HOOKS.try_lock().and_then(|h| h[i]),
            None => HOOKS.try_lock().and_then(|h| {
                usize::try_from(frame.vector)
                    .ok()
                    .and_then(|v| h.get(v).copied().flatten())
            }),
        };
        let handled = hook.is_some_and(|h| h(frame));
        if !handled {
            fatal(frame);
        }
    }
    // Xen keeps the saved upcall mask in CS bits 32-39; hand back a plain selector.
    frame.cs &= 0xffff;
}

/// Default policy: report the exception and crash the domain.
fn fatal(f: &TrapFrame) -> ! {
    crate::println!(
        "pv-guest: unhandled exception {} {} err={:#x} rip={:#x} cs={:#x} rflags={:#x} rsp={:#x} ss={:#x} cr2={:#x}",
        f.vector,
        vector_name(f.vector),
        f.error_code,
        f.rip,
        f.cs,
        f.rflags,
        f.rsp,
        f.ss,
        crate::shared::cr2()
    );
    crate::println!(
        "pv-guest: rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}",
        f.rax,
        f.rbx,
        f.rcx,
        f.rdx,
        f.rsi,
        f.rdi,
        f.rbp
    );
    crate::sched::crash()
}

/// Entry from the failsafe stub: a segment reload failed on return to us.
pub(crate) fn failsafe(w: &[u64; 11]) -> ! {
    crate::println!(
        "pv-guest: failsafe callback: ds={:#x} es={:#x} fs={:#x} gs={:#x} rip={:#x} cs={:#x}",
        w[2],
        w[3],
        w[4],
        w[5],
        w[6],
        w[7]
    );
    crate::sched::crash()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_layout() {
        let mut stubs = [0u64; NR_EXCEPTION_VECTORS];
        for (i, s) in stubs.iter_mut().enumerate() {
            *s = 0xffff_ffff_8010_0000 + 16 * i as u64;
        }
        let t = trap_table(&stubs);
        assert_eq!(t[0].vector, 0);
        assert_eq!(t[0].flags, 4);
        assert_eq!(t[3].flags, 7);
        assert_eq!(t[13].address, stubs[13]);
        assert_eq!(t[NR_EXCEPTION_VECTORS].address, 0);
    }

    #[test]
    fn extra_slots() {
        assert_eq!(extra_slot(0x80), Some(0));
        assert_eq!(extra_slot(0x81), Some(1));
        assert_eq!(extra_slot(SYSCALL_VECTOR), Some(2));
        assert_eq!(extra_slot(13), None);
        assert_eq!(extra_slot(UPCALL_VECTOR), None);
        assert!(!set_soft_int_hook(0x82, None));
        assert!(set_soft_int_hook(0x80, None));
    }

    #[test]
    fn names() {
        assert_eq!(vector_name(14), "#PF");
        assert_eq!(vector_name(300), "#??");
    }
}
