//! The register frame every entry into the hypervisor builds on its stack (entry.S),
//! which is also where a descheduled vCPU's registers are kept.

/// Vector number entry.S gives a `syscall` entry.
pub const VECTOR_SYSCALL: u64 = 0x100;

/// General registers in Xen's `cpu_user_regs` order, then the vector, the error code
/// and the hardware `iretq` frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(missing_docs)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);

impl TrapFrame {
    /// True if the frame was interrupted in ring 3 (a guest).
    pub fn from_guest(&self) -> bool {
        self.cs & 3 == 3
    }
}
