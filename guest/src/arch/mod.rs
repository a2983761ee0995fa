//! The x86_64 PV machine layer: entry point, exception/event entry stubs, the hypercall
//! instruction paths and the few CPU instructions a PV kernel may execute.
//!
//! This is one of the two modules of `pv-guest` allowed to use `unsafe` (the other is
//! [`crate::shared`]). Blanket assumptions for the whole module:
//! * we run as a 64-bit Xen PV guest kernel: ring 3, flat selectors 0xE033/0xE02B, paging
//!   set up by the domain builder so that the image (text, data, bss, boot stack) is mapped
//!   at its link address (`guest/link.ld`);
//! * the hypervisor implements Xen's pv64 ABI (hypercalls by `syscall`, bounce frames, the
//!   `iret` hypercall) as described in ../shared/ABI.md §1.4–1.11.

pub mod cpu;
// toolstack: domctl, foreign populate/pin/map for dom0's domain builder
pub mod domctl;
pub mod foreign;
// grant_table_op wrappers (map area targets only)
pub mod gnttab;
pub mod hypercall;
pub mod mmu;
pub mod user;

#[cfg(target_os = "none")]
mod entry;

/// Registers of an interrupted context, as saved by our exception/upcall entry stubs.
///
/// The layout (lowest address first) is: the 15 general-purpose registers pushed by the
/// common stub, then the vector number and error code, then the five words of Xen's bounce
/// frame (ABI.md §1.11) that `iret` consumes. RCX and R11 hold the interrupted values: Xen
/// saves them below the frame and the stubs pop them before saving everything.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Exception vector, or [`UPCALL_VECTOR`] for an event upcall.
    pub vector: u64,
    /// Error code (0 for vectors without one).
    pub error_code: u64,
    pub rip: u64,
    /// CS in bits 0-15; Xen stores the saved `evtchn_upcall_mask` in bits 32-39.
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);

/// Pseudo vector number our event-upcall stub stores in [`TrapFrame::vector`].
pub const UPCALL_VECTOR: u64 = 256;

/// Pseudo vector number the syscall-callback stub ([`user::syscall_entry_va`]) stores in
/// [`TrapFrame::vector`]: a guest-user `syscall` (ABI.md §1.11).
pub const SYSCALL_VECTOR: u64 = 257;

/// Software-interrupt vectors (`int $n`) with entry stubs ([`user::soft_int_entry_va`]).
pub const SOFT_INT_VECTORS: [u8; 2] = [0x80, 0x81];

/// Number of exception vectors we install handlers for (0-19).
pub const NR_EXCEPTION_VECTORS: usize = 20;

/// Vectors for which the CPU (and so Xen's bounce frame) carries an error code.
pub const fn vector_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17)
}

impl TrapFrame {
    /// The code selector (low 16 bits of the CS slot).
    pub fn cs_selector(&self) -> u16 {
        (self.cs & 0xffff) as u16
    }

    /// The `evtchn_upcall_mask` Xen saved when it built the frame (bits 32-39 of CS).
    pub fn saved_upcall_mask(&self) -> u8 {
        ((self.cs >> 32) & 0xff) as u8
    }

    /// Whether the interrupted context was guest kernel mode (Xen clears the RPL then).
    pub fn from_kernel(&self) -> bool {
        self.cs & 3 == 0
    }
}

/// Addresses of the assembly entry points the hypervisor must know about.
#[derive(Clone, Copy, Debug)]
pub struct EntryPoints {
    /// Exception handlers for vectors 0..[`NR_EXCEPTION_VECTORS`].
    pub exceptions: [u64; NR_EXCEPTION_VECTORS],
    /// Event upcall (`CALLBACKTYPE_event`).
    pub upcall: u64,
    /// Failsafe callback (`CALLBACKTYPE_failsafe`).
    pub failsafe: u64,
}

/// Entry point addresses (all zero on the host, where no stubs exist).
pub fn entry_points() -> EntryPoints {
    #[cfg(target_os = "none")]
    {
        entry::entry_points()
    }
    #[cfg(not(target_os = "none"))]
    {
        EntryPoints {
            exceptions: [0; NR_EXCEPTION_VECTORS],
            upcall: 0,
            failsafe: 0,
        }
    }
}

/// Virtual address of the page reserved for the shared_info mapping.
pub fn shared_info_va() -> u64 {
    #[cfg(target_os = "none")]
    {
        entry::shared_info_va()
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}

/// Virtual address of a spare, page-aligned, zeroed RAM page in .bss which a kernel may hand
/// to the hypervisor (e.g. `VCPUOP_register_vcpu_info`).
pub fn spare_page_va() -> u64 {
    #[cfg(target_os = "none")]
    {
        entry::spare_page_va()
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}

/// Virtual address of the hypercall page (filled by the hypervisor when the kernel's
/// HYPERCALL_PAGE note names it; poisoned with `0xc3` in the image).
pub fn hypercall_page_va() -> u64 {
    #[cfg(target_os = "none")]
    {
        entry::hypercall_page_va()
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}

/// First byte of the hypercall page: still `0xc3` (`ret`) if nobody filled it.
pub fn hypercall_page_first_byte() -> u8 {
    #[cfg(target_os = "none")]
    {
        // SAFETY: the hypercall page is a 4 KiB page inside our mapped, readable .text;
        // a volatile read because the hypervisor wrote it behind the compiler's back.
        unsafe { core::ptr::read_volatile(hypercall_page_va() as *const u8) }
    }
    #[cfg(not(target_os = "none"))]
    {
        0xc3
    }
}

/// Copy the start_info page the builder gave us (the `RSI` of the entry point).
///
/// # Safety
/// `si` must point to a readable `StartInfo` (the builder's start_info page).
#[cfg(target_os = "none")]
unsafe fn copy_start_info(si: *const xen_abi::xen::StartInfo) -> xen_abi::xen::StartInfo {
    // SAFETY: guaranteed by the caller; volatile because it is memory the builder wrote.
    unsafe { core::ptr::read_volatile(si) }
}

/// Called by `_start` on our own stack with RSI (start_info VA) in RDI.
///
/// # Safety
/// Only the entry stub may call this, once, with the builder's start_info pointer.
#[cfg(target_os = "none")]
#[no_mangle]
unsafe extern "C" fn pv_guest_rust_start(si: *const xen_abi::xen::StartInfo) -> ! {
    extern "Rust" {
        /// Defined by the kernel through [`crate::kernel_main!`].
        fn pv_guest_kernel_main(si: &'static xen_abi::xen::StartInfo) -> !;
    }
    // SAFETY: RSI at entry is the start_info VA (ABI.md §1.4).
    let copy = unsafe { copy_start_info(si) };
    let si = crate::start::init(copy);
    // SAFETY: the kernel binary defines this symbol with the right signature through the
    // `kernel_main!` macro (a missing definition fails at link time).
    unsafe { pv_guest_kernel_main(si) }
}

/// Called by the common exception stub with a pointer to the saved frame.
///
/// # Safety
/// Only the entry stubs call this; `frame` points to a [`TrapFrame`] on the current stack
/// that nothing else references while the handler runs.
#[cfg(target_os = "none")]
#[no_mangle]
unsafe extern "C" fn pv_guest_rust_trap(frame: *mut TrapFrame) {
    // SAFETY: see the function's contract.
    let frame = unsafe { &mut *frame };
    crate::traps::dispatch(frame);
}

/// Called by the failsafe stub (a segment reload failed on return to the guest).
///
/// # Safety
/// Only the failsafe stub calls this; `frame` points to Xen's 11-word failsafe frame.
#[cfg(target_os = "none")]
#[no_mangle]
unsafe extern "C" fn pv_guest_rust_failsafe(frame: *const [u64; 11]) -> ! {
    // SAFETY: see the function's contract.
    let words = unsafe { core::ptr::read(frame) };
    crate::traps::failsafe(&words)
}
