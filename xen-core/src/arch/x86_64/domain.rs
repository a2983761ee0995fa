//! Domains and vCPUs as the hypervisor runs them: register state, the PV "virtual CPU"
//! state (kernel/user mode, trap table, callbacks, kernel stack, segment bases, virtual
//! TS), timers, and the domain's shared_info page with the 2-level event bits in it.

use super::frame::TrapFrame;
use super::mm::{maddr_to_virt, Frames};
use crate::evtchn::{EventBits, EventChannels};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use spin::Mutex;
use xen_abi::{DomId, Mfn};

/// Offsets inside `shared_info` / `vcpu_info` (ABI.md 1.6).
mod layout {
    pub const VCPU_INFO_SIZE: u64 = 64;
    pub const PENDING: u64 = 2048;
    pub const MASK: u64 = 2560;
    pub const WC_VERSION: u64 = 3072;
    pub const WC_SEC: u64 = 3076;
    pub const WC_NSEC: u64 = 3080;
    pub const WC_SEC_HI: u64 = 3084;
    pub const VI_UPCALL_PENDING: u64 = 0;
    pub const VI_UPCALL_MASK: u64 = 1;
    pub const VI_PENDING_SEL: u64 = 8;
    pub const VI_CR2: u64 = 16;
    pub const VI_TIME: u64 = 32;
}

/// A vCPU's x87/SSE register state in `fxsave` format (512 bytes, 16-byte aligned).
#[repr(C, align(16))]
pub struct FpuState(pub [u8; 512]);

impl FpuState {
    /// The state after `fninit` with SSE defaults: FCW 0x037f, MXCSR 0x1f80, all
    /// registers zero.
    pub fn initial() -> alloc::boxed::Box<FpuState> {
        let mut s = alloc::boxed::Box::new(FpuState([0; 512]));
        s.0[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        s.0[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        s.0[28..32].copy_from_slice(&0xffffu32.to_le_bytes());
        s
    }
}

/// One entry of a guest's virtual IDT (`set_trap_table`).
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapEntry {
    /// Handler address (0 = none).
    pub address: u64,
    /// Bits 0-1: DPL for `int $n`; bit 2: mask events on entry.
    pub flags: u8,
}

/// What a vCPU is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// May run.
    Runnable,
    /// `SCHEDOP_block`: waits for an event upcall.
    Blocked,
    /// `SCHEDOP_poll`: waits for one of the domain's `poll_ports` or the deadline.
    Polling,
    /// Not started or taken down (`VCPUOP_down`, domain shut down).
    Down,
}

/// A virtual CPU.
pub struct Vcpu {
    /// Index in the domain.
    pub id: u32,
    /// Registers while not running (the live copy is the frame on the hypervisor stack).
    pub regs: TrapFrame,
    /// Guest-kernel mode (Xen's TF_kernel_mode); false = guest user mode.
    pub in_kernel: bool,
    /// Kernel stack for entries from user mode (`stack_switch`).
    pub kernel_sp: u64,
    /// Virtual IDT.
    pub traps: [TrapEntry; 256],
    /// Event upcall entry (`CALLBACKTYPE_event`).
    pub event_callback: u64,
    /// Failsafe entry (`CALLBACKTYPE_failsafe`).
    pub failsafe_callback: u64,
    /// Entry of a guest user's `syscall` (`CALLBACKTYPE_syscall`).
    pub syscall_callback: u64,
    /// Events masked on syscall-callback entry (`CALLBACKF_mask_events`).
    pub syscall_masks_events: bool,
    /// Kernel page table (machine frame of its L4).
    pub kernel_l4: Mfn,
    /// User page table (`MMUEXT_NEW_USER_BASEPTR`), if set.
    pub user_l4: Option<Mfn>,
    /// FS base.
    pub fs_base: u64,
    /// GS base while in kernel mode.
    pub gs_base_kernel: u64,
    /// GS base while in user mode.
    pub gs_base_user: u64,
    /// Machine address of this vCPU's `vcpu_info`.
    pub vcpu_info: u64,
    /// Whether `VCPUOP_register_vcpu_info` moved it (it may move only once).
    pub vcpu_info_registered: bool,
    /// Single-shot timer deadline (system time, ns).
    pub singleshot: Option<u64>,
    /// Periodic timer: (period, next deadline).
    pub periodic: Option<(u64, u64)>,
    /// Scheduling state.
    pub state: RunState,
    /// Ports a `SCHEDOP_poll` waits for, and its deadline.
    pub poll_ports: arrayvec::ArrayVec<u32, 128>,
    /// `SCHEDOP_poll` timeout (system time), if any.
    pub poll_deadline: Option<u64>,
    /// Guest GDT frames (`set_gdt`), shown in the GDT window while this vCPU runs.
    pub gdt_frames: arrayvec::ArrayVec<Mfn, 14>,
    /// Number of guest GDT entries.
    pub gdt_ents: u32,
    /// The guest's view of CR4 once it wrote one (`mov cr4`); until then the host's
    /// value with what a PV guest does not own hidden.
    pub cr4: Option<u64>,
    /// Virtual I/O privilege level (`PHYSDEVOP_set_iopl`): port I/O from guest-kernel
    /// mode is emulated when it is at least 1.
    pub iopl: u32,
    /// Debug registers as the guest set them (`set_debugreg`); not loaded into hardware.
    pub debugreg: [u64; 8],
    /// The guest's virtual CR0.TS (`fpu_taskswitch`).
    pub fpu_ts: bool,
    /// Its FPU/SSE registers while it is not running (switched eagerly, so no domain
    /// ever sees another's registers).
    pub fpu: alloc::boxed::Box<FpuState>,
    /// Time spent in each runstate (RUNSTATE_running..offline) and the current state's start.
    pub runstate_time: [u64; 4],
    /// When the current runstate began.
    pub runstate_entry: u64,
    /// The current runstate (RUNSTATE_*).
    pub runstate: i32,
}

impl Vcpu {
    /// A vCPU in its start-of-day state (ABI.md 1.4) with its vcpu_info in shared_info.
    pub fn new(id: u32, shared_info: Mfn, l4: Mfn) -> Vcpu {
        Vcpu {
            id,
            regs: TrapFrame::default(),
            in_kernel: true,
            kernel_sp: 0,
            traps: [TrapEntry::default(); 256],
            event_callback: 0,
            failsafe_callback: 0,
            syscall_callback: 0,
            syscall_masks_events: false,
            kernel_l4: l4,
            user_l4: None,
            fs_base: 0,
            gs_base_kernel: 0,
            gs_base_user: 0,
            vcpu_info: (shared_info.raw() << 12) + u64::from(id) * layout::VCPU_INFO_SIZE,
            vcpu_info_registered: false,
            singleshot: None,
            periodic: None,
            state: RunState::Down,
            poll_ports: arrayvec::ArrayVec::new(),
            poll_deadline: None,
            fpu_ts: false,
            fpu: FpuState::initial(),
            iopl: 0,
            cr4: None,
            debugreg: [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400],
            gdt_frames: arrayvec::ArrayVec::new(),
            gdt_ents: 0,
            runstate_time: [0; 4],
            runstate_entry: 0,
            runstate: xen_abi::vcpu::RUNSTATE_OFFLINE,
        }
    }

    fn vi_byte(&self, off: u64) -> &AtomicU8 {
        // SAFETY: `vcpu_info` is the machine address of a 64-byte vcpu_info inside a frame
        // that stays allocated while the domain exists (shared_info, or a guest frame
        // checked by register_vcpu_info); the direct map covers it; AtomicU8 has no
        // alignment requirement.
        unsafe { &*(maddr_to_virt(self.vcpu_info + off) as *const AtomicU8) }
    }

    fn vi_u64(&self, off: u64) -> &AtomicU64 {
        // SAFETY: as for vi_byte; every u64 field offset is 8-aligned and vcpu_info is
        // placed at an offset that keeps it so (register_vcpu_info checks alignment).
        unsafe { &*(maddr_to_virt(self.vcpu_info + off) as *const AtomicU64) }
    }

    /// `evtchn_upcall_pending`.
    pub fn upcall_pending(&self) -> bool {
        self.vi_byte(layout::VI_UPCALL_PENDING)
            .load(Ordering::SeqCst)
            != 0
    }

    /// `evtchn_upcall_mask`.
    pub fn upcall_mask(&self) -> u8 {
        self.vi_byte(layout::VI_UPCALL_MASK).load(Ordering::SeqCst)
    }

    /// Sets `evtchn_upcall_mask`.
    pub fn set_upcall_mask(&self, masked: bool) {
        self.vi_byte(layout::VI_UPCALL_MASK)
            .store(u8::from(masked), Ordering::SeqCst);
    }

    /// Sets `evtchn_upcall_pending` (returns the previous value).
    pub fn mark_upcall_pending(&self) -> bool {
        self.vi_byte(layout::VI_UPCALL_PENDING)
            .swap(1, Ordering::SeqCst)
            != 0
    }

    /// Stores the faulting address of a bounced #PF (`vcpu_info.arch.cr2`).
    pub fn set_cr2(&self, cr2: u64) {
        self.vi_u64(layout::VI_CR2).store(cr2, Ordering::SeqCst);
    }

    /// The last bounced fault address (what the guest reads as CR2).
    pub fn cr2(&self) -> u64 {
        self.vi_u64(layout::VI_CR2).load(Ordering::SeqCst)
    }

    /// Publishes the current time scale and system time (`vcpu_time_info`, version protocol).
    pub fn update_time(&self) {
        let base = self.vcpu_info + layout::VI_TIME;
        let ver = self.vi_u64(layout::VI_TIME); // version (u32) + pad share one u64
        let v = ver.load(Ordering::SeqCst) as u32;
        let odd = v.wrapping_add(1) | 1;
        ver.store(u64::from(odd), Ordering::SeqCst);
        let scale = super::time::scale();
        let tsc = super::cpu::rdtsc();
        let sys = scale.ticks_to_ns(tsc.wrapping_sub(super::time::tsc_at_boot()));
        // SAFETY: as for vi_u64; these are the vcpu_time_info fields at their ABI offsets.
        unsafe {
            core::ptr::write_volatile(maddr_to_virt(base + 8) as *mut u64, tsc);
            core::ptr::write_volatile(maddr_to_virt(base + 16) as *mut u64, sys);
            core::ptr::write_volatile(maddr_to_virt(base + 24) as *mut u32, scale.mul_frac);
            core::ptr::write_volatile(maddr_to_virt(base + 28) as *mut i8, scale.shift);
            core::ptr::write_volatile(maddr_to_virt(base + 29), 0);
        }
        ver.store(u64::from(odd.wrapping_add(1)), Ordering::SeqCst);
    }

    /// Records a runstate change.
    pub fn set_runstate(&mut self, state: i32, now: u64) {
        if let Some(t) = self.runstate_time.get_mut(self.runstate as usize) {
            *t = t.wrapping_add(now.saturating_sub(self.runstate_entry));
        }
        self.runstate = state;
        self.runstate_entry = now;
    }
}

/// The event bits of one domain: its shared_info page and its vCPUs' vcpu_info.
pub struct SharedBits {
    shared_info: u64,
    /// Machine address of each vCPU's vcpu_info.
    vcpu_info: arrayvec::ArrayVec<u64, 32>,
}

impl SharedBits {
    fn vi(&self, vcpu: u32, off: u64) -> Option<(&AtomicU64, &AtomicU8)> {
        let base = *self.vcpu_info.get(vcpu as usize)?;
        // SAFETY: as for Vcpu::vi_u64/vi_byte: a live vcpu_info in the direct map.
        unsafe {
            Some((
                &*(maddr_to_virt(base + off) as *const AtomicU64),
                &*(maddr_to_virt(base + layout::VI_UPCALL_PENDING) as *const AtomicU8),
            ))
        }
    }

    fn word(&self, base: u64, port: u32) -> Option<(&AtomicU64, u64)> {
        if port >= 4096 {
            return None;
        }
        let addr = self.shared_info + base + u64::from(port / 64) * 8;
        // SAFETY: shared_info is a hypervisor-owned frame mapped in the direct map for the
        // life of the domain; the word is inside it and 8-aligned.
        Some((
            unsafe { &*(maddr_to_virt(addr) as *const AtomicU64) },
            1u64 << (port % 64),
        ))
    }
}

impl EventBits for SharedBits {
    fn test_and_set_pending(&self, port: u32) -> bool {
        self.word(layout::PENDING, port)
            .is_some_and(|(w, b)| w.fetch_or(b, Ordering::SeqCst) & b != 0)
    }
    fn clear_pending(&self, port: u32) {
        if let Some((w, b)) = self.word(layout::PENDING, port) {
            w.fetch_and(!b, Ordering::SeqCst);
        }
    }
    fn is_pending(&self, port: u32) -> bool {
        self.word(layout::PENDING, port)
            .is_some_and(|(w, b)| w.load(Ordering::SeqCst) & b != 0)
    }
    fn is_masked(&self, port: u32) -> bool {
        self.word(layout::MASK, port)
            .is_none_or(|(w, b)| w.load(Ordering::SeqCst) & b != 0)
    }
    fn test_and_clear_mask(&self, port: u32) -> bool {
        self.word(layout::MASK, port)
            .is_some_and(|(w, b)| w.fetch_and(!b, Ordering::SeqCst) & b != 0)
    }
    fn set_mask(&self, port: u32) {
        if let Some((w, b)) = self.word(layout::MASK, port) {
            w.fetch_or(b, Ordering::SeqCst);
        }
    }
    fn test_and_set_selector(&self, vcpu: u32, word: u32) -> bool {
        let Some((sel, _)) = self.vi(vcpu, layout::VI_PENDING_SEL) else {
            return true;
        };
        let b = 1u64 << (word % 64);
        sel.fetch_or(b, Ordering::SeqCst) & b != 0
    }
    fn set_upcall_pending(&self, vcpu: u32) -> bool {
        self.vi(vcpu, layout::VI_PENDING_SEL)
            .is_none_or(|(_, pending)| pending.swap(1, Ordering::SeqCst) != 0)
    }
}

/// Why a domain stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// `SCHEDOP_shutdown` with this reason (SHUTDOWN_*).
    Requested(u32),
    /// Crashed by the hypervisor (a fault with no handler, a bad stack...).
    Crashed,
}

/// A domain.
pub struct Domain {
    /// Its id.
    pub id: DomId,
    /// Its vCPUs.
    pub vcpus: Vec<Vcpu>,
    /// Machine frame of its shared_info page (hypervisor-owned).
    pub shared_info: Mfn,
    /// Its event channels.
    pub evtchn: EventChannels,
    /// Frames it owns, indexed by its pseudo-physical frame number (the p2m).
    pub p2m: Vec<Mfn>,
    /// Memory limit in pages.
    pub max_pages: u64,
    /// Privileged (dom0).
    pub privileged: bool,
    /// Set once it has shut down or crashed.
    pub shutdown: Option<Shutdown>,
    /// Code recorded by `SCHEDOP_shutdown_code`.
    pub shutdown_code: Option<u32>,
    /// Enabled VM assists (bit per VMASST_TYPE_*).
    pub vm_assist: u64,
    /// Paused by the toolstack (`DOMCTL_pausedomain`): no vCPU is scheduled.
    pub paused: bool,
    /// I/O port ranges `[start, end)` it may use (`DOMCTL_ioport_permission`).
    pub ioports: Vec<(u32, u32)>,
    /// Its virtual PCI configuration address register (port 0xcf8; Xen's `pci_cf8`).
    pub pci_cf8: u32,
    /// Physical IRQs it may bind (`DOMCTL_irq_permission`).
    pub irqs: Vec<u32>,
    /// Its grant table (as granter).
    pub grant: grant::GrantTable,
    /// Its grant table's shared entries.
    pub grant_entries: super::granthc::DirectEntries,
    /// Grants it has mapped (as mapper).
    pub maptrack: grant::MapTrack,
    /// Its physical IRQs (`PHYSDEVOP_map_pirq`; only the hardware domain maps any).
    pub pirqs: crate::pirq::PirqTable,
}

impl Domain {
    /// The event bits of this domain.
    pub fn bits(&self) -> SharedBits {
        SharedBits {
            shared_info: self.shared_info.raw() << 12,
            vcpu_info: self.vcpus.iter().take(32).map(|v| v.vcpu_info).collect(),
        }
    }

    /// Raises `virq` on `vcpu`, if the domain bound it. Returns the vCPU to kick.
    pub fn send_virq(&mut self, virq: u32, vcpu: u32) -> Option<u32> {
        let d = self
            .evtchn
            .send_virq(virq, xen_abi::VcpuId::new(vcpu), &self.bits())?;
        let kick = d.kick().map(|v| v.raw());
        self.after_raise(d.port.raw(), d.vcpu.raw(), d.outcome.newly_pending());
        kick
    }

    /// Wakes vCPUs that wait for `port` (blocked with an upcall now pending, or polling it).
    pub fn after_raise(&mut self, port: u32, vcpu: u32, newly_pending: bool) {
        for v in self.vcpus.iter_mut() {
            match v.state {
                RunState::Blocked if v.id == vcpu && v.upcall_pending() => {
                    v.state = RunState::Runnable
                }
                RunState::Polling if newly_pending && v.poll_ports.contains(&port) => {
                    v.state = RunState::Runnable;
                    v.regs.rax = 0;
                }
                _ => {}
            }
        }
        let _ = vcpu;
    }

    /// Writes the wall clock (Unix time at system time 0) into shared_info.
    pub fn update_wallclock(&self, sec: u64, nsec: u32) {
        let base = self.shared_info.raw() << 12;
        // SAFETY: shared_info is a hypervisor frame in the direct map; the fields are at
        // their ABI offsets and aligned.
        unsafe {
            let ver = maddr_to_virt(base + layout::WC_VERSION) as *mut u32;
            let v = core::ptr::read_volatile(ver);
            core::ptr::write_volatile(ver, v.wrapping_add(1) | 1);
            core::ptr::write_volatile(maddr_to_virt(base + layout::WC_SEC) as *mut u32, sec as u32);
            core::ptr::write_volatile(maddr_to_virt(base + layout::WC_NSEC) as *mut u32, nsec);
            core::ptr::write_volatile(
                maddr_to_virt(base + layout::WC_SEC_HI) as *mut u32,
                (sec >> 32) as u32,
            );
            core::ptr::write_volatile(ver, (v.wrapping_add(1) | 1).wrapping_add(1));
        }
    }

    /// Masks event delivery on every vCPU (start-of-day state).
    pub fn mask_all_upcalls(&self) {
        for v in &self.vcpus {
            v.set_upcall_mask(true);
        }
    }

    /// Returns every frame the domain holds to the free pool.
    pub fn release_memory(&mut self, frames: &mut Frames) {
        for m in self.p2m.drain(..) {
            frames.free(m);
        }
        frames.free(self.shared_info);
    }
}

/// All domains and which vCPU runs.
pub struct Hypervisor {
    /// Domains, by id.
    pub domains: Vec<Domain>,
    /// Index of the running domain and vCPU (None while idle).
    pub current: Option<(usize, usize)>,
    /// Boot options.
    pub options: crate::cmdline::Options,
    /// Serial input arrived and dom0 must be told (VIRQ_CONSOLE).
    pub console_input_pending: bool,
    /// When the running vCPU's time slice began.
    pub slice_start: u64,
    /// `SCHEDOP_yield`: give the CPU to another runnable vCPU at the next exit.
    pub yield_requested: bool,
    /// Where the search for the next free domain id starts.
    pub next_domid: u16,
}

/// The hypervisor's state. The hypervisor runs with interrupts off on one CPU, so the
/// lock is never contended by an interrupt handler: the idle loop drops it before it
/// halts.
pub static HV: Mutex<Hypervisor> = Mutex::new(Hypervisor {
    domains: Vec::new(),
    current: None,
    options: crate::cmdline::Options {
        log_level: crate::log::LogLevel::Info,
        noreboot: false,
        dom0_mem_kib: None,
    },
    console_input_pending: false,
    slice_start: 0,
    yield_requested: false,
    next_domid: 1,
});

impl Hypervisor {
    /// Index of a domain by id.
    pub fn find(&self, id: DomId) -> Option<usize> {
        self.domains.iter().position(|d| d.id == id)
    }
}
