//! Hypercalls (ABI.md §1.8): `syscall` with RAX = number and arguments in RDI, RSI, RDX,
//! R10, R8; result in RAX; RCX/R11 destroyed and the argument registers treated as
//! clobbered (debug Xen poisons them). A second path calls the hypercall page
//! (`hypercall_page + 32*n`) for kernels whose HYPERCALL_PAGE note asked the builder to fill
//! it.
//!
//! Every public function here is safe: buffers are passed as Rust references of exactly the
//! type the hypervisor reads or writes for that sub-op. Deliberately bad pointers (for error
//! tests) go through [`probe`], which only accepts small scalars and the [`BadPtr`]
//! addresses that are never guest memory.

#[cfg(target_os = "none")]
use core::arch::asm;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use xen_abi::callback::{
    CallbackRegister, CallbackUnregister, CALLBACKOP_REGISTER, CALLBACKOP_UNREGISTER,
};
use xen_abi::event_channel as ev;
use xen_abi::hypercall as nr;
use xen_abi::hypercall::MulticallEntry;
use xen_abi::memory::{XenMachphysMapping, XenMemoryReservation};
use xen_abi::physdev as pd;
use xen_abi::sched::{self, SchedPoll, SchedShutdown};
use xen_abi::sysctl::{
    Sysctl, SysctlPhysinfo, SysctlReadconsole, SYSCTL_PHYSINFO, SYSCTL_READCONSOLE,
};
use xen_abi::vcpu::{
    self, VcpuRegisterVcpuInfo, VcpuRunstateInfo, VcpuSetPeriodicTimer, VcpuSetSingleshotTimer,
};
use xen_abi::version::{self, XenCompileInfo, XenFeatureInfo, XenPlatformParameters};
use xen_abi::xen::{
    MmuUpdate, MmuextOp, TrapInfo, CONSOLEIO_READ, CONSOLEIO_WRITE, MMUEXT_NEW_USER_BASEPTR,
    UVMF_INVLPG,
};
use xen_abi::{DomId, Errno};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// A failed hypercall: the negative value the hypervisor returned in RAX.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Error(i64);

impl Error {
    /// The raw return value (a negative errno).
    pub const fn raw(self) -> i64 {
        self.0
    }

    /// The errno, if it is one Xen defines.
    pub fn errno(self) -> Option<Errno> {
        Errno::from_ret(self.0)
    }

    /// An error produced locally (the hypercall was not issued).
    pub const fn local(e: Errno) -> Error {
        Error(e.to_ret())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errno() {
            Some(e) => write!(f, "-{}", e.name()),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Result of a hypercall.
pub type Result<T> = core::result::Result<T, Error>;

/// Xen returns -errno in -4095..=-1; everything else is a success value.
pub fn check(ret: i64) -> Result<u64> {
    if (-4095..0).contains(&ret) {
        Err(Error(ret))
    } else {
        Ok(ret as u64)
    }
}

/// How a hypercall reaches the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// `syscall` issued inline (what Linux 6.1 does).
    Syscall,
    /// `call hypercall_page + 32*n` (XTF, Mini-OS).
    Page,
}

static USE_PAGE: AtomicBool = AtomicBool::new(false);

/// Whether the hypervisor filled our hypercall page (first byte no longer the `0xc3` poison).
pub fn hypercall_page_filled() -> bool {
    super::hypercall_page_first_byte() != 0xc3
}

/// Select the path used by all typed wrappers. Returns false (and keeps `Syscall`) if the
/// page was requested but not filled.
pub fn set_default_path(path: Path) -> bool {
    let ok = path == Path::Syscall || hypercall_page_filled();
    USE_PAGE.store(path == Path::Page && ok, Ordering::Relaxed);
    ok
}

/// The path the typed wrappers currently use.
pub fn default_path() -> Path {
    if USE_PAGE.load(Ordering::Relaxed) {
        Path::Page
    } else {
        Path::Syscall
    }
}

/// Issue hypercall `op` with `syscall`.
///
/// # Safety
/// The arguments must be valid for that hypercall: any guest address in them must point to
/// memory that the hypervisor may read/write as the sub-op defines.
#[cfg(target_os = "none")]
unsafe fn syscall5(op: u64, a: [u64; 5]) -> i64 {
    let ret: i64;
    // SAFETY: the hypercall ABI: RAX in/out, args in RDI/RSI/RDX/R10/R8 (treated as
    // clobbered), RCX/R11 destroyed by `syscall`. Memory effects are covered by the caller's
    // contract; the asm is not `nomem`, so the compiler assumes memory may change.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") op as i64 => ret,
            inlateout("rdi") a[0] => _,
            inlateout("rsi") a[1] => _,
            inlateout("rdx") a[2] => _,
            inlateout("r10") a[3] => _,
            inlateout("r8") a[4] => _,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Issue hypercall `op` through its hypercall-page slot.
///
/// # Safety
/// As [`syscall5`]; in addition the hypercall page must have been filled by the hypervisor
/// and `op` must be below 128 (the page has 128 slots of 32 bytes).
#[cfg(target_os = "none")]
unsafe fn page5(op: u64, a: [u64; 5]) -> i64 {
    let slot = super::hypercall_page_va() + op * 32;
    let ret: i64;
    // SAFETY: the slot is Xen's stub (push rcx; push r11; mov $op,%eax; syscall; pop r11;
    // pop rcx; ret), which needs our stack for the pushes and the return address (so no
    // `nostack`); same register contract as `syscall5`.
    unsafe {
        asm!(
            "call {slot}",
            slot = in(reg) slot,
            inlateout("rax") op as i64 => ret,
            inlateout("rdi") a[0] => _,
            inlateout("rsi") a[1] => _,
            inlateout("rdx") a[2] => _,
            inlateout("r10") a[3] => _,
            inlateout("r8") a[4] => _,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

/// On the host (unit tests) there is no hypervisor: `syscall` would be a Linux system call.
#[cfg(not(target_os = "none"))]
unsafe fn syscall5(_op: u64, _a: [u64; 5]) -> i64 {
    Errno::ENOSYS.to_ret()
}

#[cfg(not(target_os = "none"))]
unsafe fn page5(_op: u64, _a: [u64; 5]) -> i64 {
    Errno::ENOSYS.to_ret()
}

/// Issue a hypercall on the given path (falls back to `syscall` for numbers the page has no
/// slot for).
///
/// # Safety
/// As [`syscall5`].
unsafe fn call_on(path: Path, op: u64, a: [u64; 5]) -> i64 {
    if path == Path::Page && op < 128 && hypercall_page_filled() {
        // SAFETY: page filled and op < 128 checked; arguments per the caller.
        unsafe { page5(op, a) }
    } else {
        // SAFETY: per the caller.
        unsafe { syscall5(op, a) }
    }
}

/// # Safety
/// As [`syscall5`].
pub(crate) unsafe fn call(op: u64, a: [u64; 5]) -> i64 {
    // SAFETY: per the caller.
    unsafe { call_on(default_path(), op, a) }
}

/// `op(cmd, &mut arg)` where the hypervisor reads/writes exactly one `T`.
fn op_struct<T: IntoBytes + FromBytes>(op: u64, cmd: u32, arg: &mut T) -> i64 {
    // SAFETY: `arg` is a live, exclusively borrowed `T`; every (op, cmd) pair this module
    // uses with `op_struct` transfers at most `size_of::<T>()` bytes (Xen's public headers).
    unsafe { call(op, [u64::from(cmd), arg as *mut T as u64, 0, 0, 0]) }
}

/// `op(cmd, NULL)` for sub-ops that take no buffer.
fn op_null(op: u64, cmd: u32) -> i64 {
    // SAFETY: a NULL handle is never dereferenced by sub-ops without an argument.
    unsafe { call(op, [u64::from(cmd), 0, 0, 0, 0]) }
}

// ---------------------------------------------------------------------------------------
// Deliberately bad arguments (error-path tests).

/// Addresses that are never guest memory, for testing -EFAULT paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadPtr {
    /// NULL.
    Null,
    /// Inside the hypervisor's reserved range (Xen's direct map, 0xffff830000000000).
    Hypervisor,
    /// Non-canonical (0x8000000000000000).
    NonCanonical,
    /// A canonical lower-half address our kernels never map (0x0000555500000000).
    Unmapped,
}

impl BadPtr {
    /// The address.
    pub const fn addr(self) -> u64 {
        match self {
            BadPtr::Null => 0,
            BadPtr::Hypervisor => 0xffff_8300_0000_0000,
            BadPtr::NonCanonical => 0x8000_0000_0000_0000,
            BadPtr::Unmapped => 0x0000_5555_0000_0000,
        }
    }

    /// All four kinds.
    pub const ALL: [BadPtr; 4] = [
        BadPtr::Null,
        BadPtr::Hypervisor,
        BadPtr::NonCanonical,
        BadPtr::Unmapped,
    ];
}

/// One argument of [`probe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// A small scalar (below [`PROBE_SCALAR_LIMIT`]), so it can never be a guest pointer.
    Scalar(u64),
    /// A bad pointer.
    Bad(BadPtr),
}

/// Scalars at or above this are refused by [`probe`] (our kernels map nothing below 64 KiB).
pub const PROBE_SCALAR_LIMIT: u64 = 0x1_0000;

/// [`probe`] refused its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeRefused;

fn arg_value(a: Arg) -> core::result::Result<u64, ProbeRefused> {
    match a {
        Arg::Scalar(v) if v < PROBE_SCALAR_LIMIT => Ok(v),
        Arg::Scalar(_) => Err(ProbeRefused),
        Arg::Bad(b) => Ok(b.addr()),
    }
}

/// Issue any hypercall number with arguments that cannot point at guest memory, returning
/// the raw RAX. For error-path tests (unknown numbers/sub-ops, bad pointers).
pub fn probe(path: Path, op: u64, args: [Arg; 5]) -> core::result::Result<i64, ProbeRefused> {
    let mut a = [0u64; 5];
    for (slot, arg) in a.iter_mut().zip(args) {
        *slot = arg_value(arg)?;
    }
    // SAFETY: every argument is a small scalar or an address outside guest memory, so no
    // hypervisor access through them can touch our memory.
    Ok(unsafe { call_on(path, op, a) })
}

/// [`probe`] with scalars only.
pub fn probe_scalars(
    path: Path,
    op: u64,
    args: [u64; 5],
) -> core::result::Result<i64, ProbeRefused> {
    probe(path, op, args.map(Arg::Scalar))
}

// ---------------------------------------------------------------------------------------
// xen_version (17)

/// `XENVER_version`: (major, minor).
pub fn xen_version() -> Result<(u16, u16)> {
    let v = check(op_null(nr::XEN_VERSION, version::XENVER_VERSION))?;
    Ok(((v >> 16) as u16, (v & 0xffff) as u16))
}

/// `XENVER_version` as a no-op: Xen delivers pending events on every hypercall return.
pub fn force_event_callback() {
    let _ = op_null(nr::XEN_VERSION, version::XENVER_VERSION);
}

/// `XENVER_extraversion` (NUL-padded).
pub fn xen_extraversion() -> Result<[u8; 16]> {
    let mut b = [0u8; 16];
    check(op_struct(
        nr::XEN_VERSION,
        version::XENVER_EXTRAVERSION,
        &mut b,
    ))?;
    Ok(b)
}

/// `XENVER_compile_info`.
pub fn xen_compile_info() -> Result<XenCompileInfo> {
    let mut b = XenCompileInfo::new_zeroed();
    check(op_struct(
        nr::XEN_VERSION,
        version::XENVER_COMPILE_INFO,
        &mut b,
    ))?;
    Ok(b)
}

/// `XENVER_capabilities` (NUL-padded).
pub fn xen_capabilities() -> Result<[u8; 1024]> {
    let mut b = [0u8; 1024];
    check(op_struct(
        nr::XEN_VERSION,
        version::XENVER_CAPABILITIES,
        &mut b,
    ))?;
    Ok(b)
}

/// `XENVER_changeset` (NUL-padded).
pub fn xen_changeset() -> Result<[u8; 64]> {
    let mut b = [0u8; 64];
    check(op_struct(
        nr::XEN_VERSION,
        version::XENVER_CHANGESET,
        &mut b,
    ))?;
    Ok(b)
}

/// `XENVER_platform_parameters`: `virt_start`.
pub fn xen_platform_parameters() -> Result<u64> {
    let mut b = XenPlatformParameters::new_zeroed();
    check(op_struct(
        nr::XEN_VERSION,
        version::XENVER_PLATFORM_PARAMETERS,
        &mut b,
    ))?;
    Ok(b.virt_start)
}

/// `XENVER_get_features` for one submap.
pub fn xen_get_features(submap_idx: u32) -> Result<u32> {
    let mut b = XenFeatureInfo {
        submap_idx,
        submap: 0,
    };
    check(op_struct(
        nr::XEN_VERSION,
        version::XENVER_GET_FEATURES,
        &mut b,
    ))?;
    Ok(b.submap)
}

/// `XENVER_pagesize` (NULL argument).
pub fn xen_pagesize() -> Result<u64> {
    check(op_null(nr::XEN_VERSION, version::XENVER_PAGESIZE))
}

/// `XENVER_guest_handle`: the domain's 16-byte handle.
pub fn xen_guest_handle() -> Result<[u8; 16]> {
    let mut b = [0u8; 16];
    check(op_struct(
        nr::XEN_VERSION,
        version::XENVER_GUEST_HANDLE,
        &mut b,
    ))?;
    Ok(b)
}

// ---------------------------------------------------------------------------------------
// console_io (18)

/// `CONSOLEIO_write`.
pub fn console_write(bytes: &[u8]) -> Result<u64> {
    let len = u32::try_from(bytes.len()).map_err(|_| Error::local(Errno::E2BIG))?;
    // SAFETY: the hypervisor reads `len` bytes from `bytes`.
    check(unsafe {
        call(
            nr::CONSOLE_IO,
            [
                u64::from(CONSOLEIO_WRITE),
                u64::from(len),
                bytes.as_ptr() as u64,
                0,
                0,
            ],
        )
    })
}

/// `CONSOLEIO_read`: returns the number of bytes stored into `buf`.
pub fn console_read(buf: &mut [u8]) -> Result<usize> {
    let len = u32::try_from(buf.len())
        .unwrap_or(u32::MAX)
        .min(i32::MAX as u32);
    // SAFETY: the hypervisor writes at most `len` bytes into `buf`.
    let n = check(unsafe {
        call(
            nr::CONSOLE_IO,
            [
                u64::from(CONSOLEIO_READ),
                u64::from(len),
                buf.as_mut_ptr() as u64,
                0,
                0,
            ],
        )
    })?;
    Ok((n as usize).min(buf.len()))
}

// ---------------------------------------------------------------------------------------
// sched_op (29), set_timer_op (15)

/// `SCHEDOP_yield`.
pub fn sched_yield() -> Result<u64> {
    check(op_null(nr::SCHED_OP, sched::SCHEDOP_YIELD))
}

/// `SCHEDOP_block`: clears the upcall mask, then sleeps until an event is pending.
pub fn sched_block() -> Result<u64> {
    check(op_null(nr::SCHED_OP, sched::SCHEDOP_BLOCK))
}

/// `SCHEDOP_shutdown` with a reason (returns only if the hypervisor refuses or for suspend).
pub fn sched_shutdown(reason: u32) -> Result<u64> {
    let mut s = SchedShutdown { reason };
    check(op_struct(nr::SCHED_OP, sched::SCHEDOP_SHUTDOWN, &mut s))
}

/// `SCHEDOP_shutdown_code`.
pub fn sched_shutdown_code(reason: u32) -> Result<u64> {
    let mut s = SchedShutdown { reason };
    check(op_struct(
        nr::SCHED_OP,
        sched::SCHEDOP_SHUTDOWN_CODE,
        &mut s,
    ))
}

/// `SCHEDOP_poll` on `ports` until one is pending or system time `timeout_ns` (0 = none).
pub fn sched_poll(ports: &[u32], timeout_ns: u64) -> Result<u64> {
    let nr_ports = u32::try_from(ports.len()).map_err(|_| Error::local(Errno::EINVAL))?;
    let mut p = SchedPoll::new_zeroed();
    p.ports = ports.as_ptr() as u64;
    p.nr_ports = nr_ports;
    p.timeout = timeout_ns;
    // SAFETY: the hypervisor reads the `SchedPoll` and `nr_ports` u32s from `ports`.
    check(unsafe {
        call(
            nr::SCHED_OP,
            [
                u64::from(sched::SCHEDOP_POLL),
                &mut p as *mut SchedPoll as u64,
                0,
                0,
                0,
            ],
        )
    })
}

/// `set_timer_op(deadline)`: one-shot VIRQ_TIMER at system time `deadline_ns`; 0 cancels.
pub fn set_timer_op(deadline_ns: u64) -> Result<u64> {
    // SAFETY: scalar argument only.
    check(unsafe { call(nr::SET_TIMER_OP, [deadline_ns, 0, 0, 0, 0]) })
}

// ---------------------------------------------------------------------------------------
// vcpu_op (24)

fn vcpu_null(cmd: u32, vcpu: u32) -> i64 {
    // SAFETY: NULL argument for sub-ops without one.
    unsafe { call(nr::VCPU_OP, [u64::from(cmd), u64::from(vcpu), 0, 0, 0]) }
}

fn vcpu_struct<T: IntoBytes + FromBytes>(cmd: u32, vcpu: u32, arg: &mut T) -> i64 {
    // SAFETY: `arg` is an exclusively borrowed `T`, the exact structure of `cmd`.
    unsafe {
        call(
            nr::VCPU_OP,
            [u64::from(cmd), u64::from(vcpu), arg as *mut T as u64, 0, 0],
        )
    }
}

/// `VCPUOP_is_up`: 1 or 0.
pub fn vcpu_is_up(vcpu: u32) -> Result<u64> {
    check(vcpu_null(vcpu::VCPUOP_IS_UP, vcpu))
}

/// `VCPUOP_get_runstate_info`.
pub fn vcpu_runstate_info(vcpu: u32) -> Result<VcpuRunstateInfo> {
    let mut r = VcpuRunstateInfo::new_zeroed();
    check(vcpu_struct(vcpu::VCPUOP_GET_RUNSTATE_INFO, vcpu, &mut r))?;
    Ok(r)
}

/// `VCPUOP_set_periodic_timer`.
pub fn vcpu_set_periodic_timer(vcpu: u32, period_ns: u64) -> Result<u64> {
    let mut t = VcpuSetPeriodicTimer { period_ns };
    check(vcpu_struct(vcpu::VCPUOP_SET_PERIODIC_TIMER, vcpu, &mut t))
}

/// `VCPUOP_stop_periodic_timer`.
pub fn vcpu_stop_periodic_timer(vcpu: u32) -> Result<u64> {
    check(vcpu_null(vcpu::VCPUOP_STOP_PERIODIC_TIMER, vcpu))
}

/// `VCPUOP_set_singleshot_timer`.
pub fn vcpu_set_singleshot_timer(vcpu: u32, timeout_abs_ns: u64, flags: u32) -> Result<u64> {
    let mut t = VcpuSetSingleshotTimer::new_zeroed();
    t.timeout_abs_ns = timeout_abs_ns;
    t.flags = flags;
    check(vcpu_struct(vcpu::VCPUOP_SET_SINGLESHOT_TIMER, vcpu, &mut t))
}

/// `VCPUOP_stop_singleshot_timer`.
pub fn vcpu_stop_singleshot_timer(vcpu: u32) -> Result<u64> {
    check(vcpu_null(vcpu::VCPUOP_STOP_SINGLESHOT_TIMER, vcpu))
}

/// `VCPUOP_register_vcpu_info` for vCPU 0 at `offset` in our spare page (see
/// [`super::spare_page_va`]). On success the runtime switches to the new location (Xen
/// uses only it from then on). `offset` values that do not fit the page are passed through
/// so that a test can see the hypervisor reject them.
pub fn register_vcpu_info_in_spare_page(offset: u32) -> Result<u64> {
    let va = super::spare_page_va();
    let mfn = crate::start::va_to_mfn(va).ok_or(Error::local(Errno::EINVAL))?;
    let mut r = VcpuRegisterVcpuInfo::new_zeroed();
    r.mfn = mfn;
    r.offset = offset;
    let ret = check(vcpu_struct(vcpu::VCPUOP_REGISTER_VCPU_INFO, 0, &mut r))?;
    crate::shared::relocate_vcpu_info(va + u64::from(offset));
    Ok(ret)
}

// ---------------------------------------------------------------------------------------
// event_channel_op (32)

fn evtchn<T: IntoBytes + FromBytes>(cmd: u32, arg: &mut T) -> Result<u64> {
    check(op_struct(nr::EVENT_CHANNEL_OP, cmd, arg))
}

/// `EVTCHNOP_alloc_unbound`: a new port of `dom` that `remote_dom` may bind.
pub fn evtchn_alloc_unbound(dom: u16, remote_dom: u16) -> Result<u32> {
    let mut a = ev::EvtchnAllocUnbound {
        dom,
        remote_dom,
        port: 0,
    };
    evtchn(ev::EVTCHNOP_ALLOC_UNBOUND, &mut a)?;
    Ok(a.port)
}

/// `EVTCHNOP_bind_interdomain`: connect a new local port to `remote_dom`'s unbound port.
pub fn evtchn_bind_interdomain(remote_dom: u16, remote_port: u32) -> Result<u32> {
    let mut b = ev::EvtchnBindInterdomain::new_zeroed();
    b.remote_dom = remote_dom;
    b.remote_port = remote_port;
    evtchn(ev::EVTCHNOP_BIND_INTERDOMAIN, &mut b)?;
    Ok(b.local_port)
}

/// `EVTCHNOP_bind_virq`.
pub fn evtchn_bind_virq(virq: u32, vcpu: u32) -> Result<u32> {
    let mut b = ev::EvtchnBindVirq {
        virq,
        vcpu,
        port: 0,
    };
    evtchn(ev::EVTCHNOP_BIND_VIRQ, &mut b)?;
    Ok(b.port)
}

/// `EVTCHNOP_bind_ipi`.
pub fn evtchn_bind_ipi(vcpu: u32) -> Result<u32> {
    let mut b = ev::EvtchnBindIpi { vcpu, port: 0 };
    evtchn(ev::EVTCHNOP_BIND_IPI, &mut b)?;
    Ok(b.port)
}

/// `EVTCHNOP_close`.
pub fn evtchn_close(port: u32) -> Result<u64> {
    evtchn(ev::EVTCHNOP_CLOSE, &mut ev::EvtchnClose { port })
}

/// `EVTCHNOP_send`.
pub fn evtchn_send(port: u32) -> Result<u64> {
    evtchn(ev::EVTCHNOP_SEND, &mut ev::EvtchnSend { port })
}

/// `EVTCHNOP_status` of `dom`'s `port`.
pub fn evtchn_status(dom: u16, port: u32) -> Result<ev::EvtchnStatus> {
    let mut s = ev::EvtchnStatus::new_zeroed();
    s.dom = dom;
    s.port = port;
    evtchn(ev::EVTCHNOP_STATUS, &mut s)?;
    Ok(s)
}

/// `EVTCHNOP_bind_vcpu`.
pub fn evtchn_bind_vcpu(port: u32, vcpu: u32) -> Result<u64> {
    evtchn(
        ev::EVTCHNOP_BIND_VCPU,
        &mut ev::EvtchnBindVcpu { port, vcpu },
    )
}

/// `EVTCHNOP_unmask` (the hypervisor clears the mask bit and re-raises a pending event).
pub fn evtchn_unmask(port: u32) -> Result<u64> {
    evtchn(ev::EVTCHNOP_UNMASK, &mut ev::EvtchnUnmask { port })
}

/// `EVTCHNOP_reset`: close every port of `dom`.
pub fn evtchn_reset(dom: u16) -> Result<u64> {
    let mut r = ev::EvtchnReset::new_zeroed();
    r.dom = dom;
    evtchn(ev::EVTCHNOP_RESET, &mut r)
}

/// `EVTCHNOP_bind_pirq`: a new port for physical IRQ `pirq` (mapped with
/// [`physdev_map_pirq_msix`]); `flags` is `BIND_PIRQ__WILL_SHARE` or 0.
pub fn evtchn_bind_pirq(pirq: u32, flags: u32) -> Result<u32> {
    let mut b = ev::EvtchnBindPirq {
        pirq,
        flags,
        port: 0,
    };
    evtchn(ev::EVTCHNOP_BIND_PIRQ, &mut b)?;
    Ok(b.port)
}

// ---------------------------------------------------------------------------------------
// physdev_op (33): I/O privilege and physical IRQs (hardware domain)

fn physdev<T: IntoBytes + FromBytes>(cmd: u32, arg: &mut T) -> Result<u64> {
    check(op_struct(nr::PHYSDEV_OP, cmd, arg))
}

/// `PHYSDEVOP_set_iopl`: the vCPU's virtual I/O privilege level (1 lets the kernel use
/// `in`/`out` on the ports it was given).
pub fn physdev_set_iopl(iopl: u32) -> Result<()> {
    physdev(pd::PHYSDEVOP_SET_IOPL, &mut pd::PhysdevSetIopl { iopl }).map(|_| ())
}

/// `PHYSDEVOP_map_pirq` with a caller-built request (every field as given, written back
/// by the hypervisor); returns the hypervisor's answer. For tests and unusual requests;
/// drivers use [`physdev_map_pirq_msix`].
pub fn physdev_map_pirq(map: &mut pd::PhysdevMapPirq) -> Result<u64> {
    physdev(pd::PHYSDEVOP_MAP_PIRQ, map)
}

/// `PHYSDEVOP_map_pirq` for MSI-X table entry `entry` of PCI function `bus`/`devfn`
/// (segment 0), whose table is at machine address `table_base`: `MAP_PIRQ_TYPE_MSI`,
/// `DOMID_SELF`, index -1, any PIRQ. The hypervisor programs the entry with one of its
/// vectors and enables MSI-X on the function; the entry interrupts once a port is bound
/// ([`evtchn_bind_pirq`]). Returns the PIRQ.
pub fn physdev_map_pirq_msix(bus: u8, devfn: u8, entry: u16, table_base: u64) -> Result<u32> {
    let mut m = pd::PhysdevMapPirq {
        domid: DomId::SELF.raw(),
        kind: pd::MAP_PIRQ_TYPE_MSI,
        index: -1,
        pirq: -1,
        bus: i32::from(bus),
        devfn: i32::from(devfn),
        entry_nr: i32::from(entry),
        table_base,
        ..Default::default()
    };
    physdev_map_pirq(&mut m)?;
    u32::try_from(m.pirq).map_err(|_| Error::local(Errno::EINVAL))
}

/// `PHYSDEVOP_unmap_pirq` of `domid`'s `pirq` (raw form, for tests).
pub fn physdev_unmap_pirq_of(domid: u16, pirq: i32) -> Result<()> {
    let mut u = pd::PhysdevUnmapPirq {
        domid,
        pirq,
        ..Default::default()
    };
    physdev(pd::PHYSDEVOP_UNMAP_PIRQ, &mut u).map(|_| ())
}

/// `PHYSDEVOP_unmap_pirq` of one of our PIRQs (the device side is masked; a port still
/// bound to it stays and receives nothing more).
pub fn physdev_unmap_pirq(pirq: u32) -> Result<()> {
    let pirq = i32::try_from(pirq).map_err(|_| Error::local(Errno::EINVAL))?;
    physdev_unmap_pirq_of(DomId::SELF.raw(), pirq)
}

/// `PHYSDEVOP_irq_status_query`: the `XENIRQSTAT_*` flags of `pirq`.
pub fn physdev_irq_status_query(pirq: u32) -> Result<u32> {
    let mut q = pd::PhysdevIrqStatusQuery {
        irq: pirq,
        flags: 0,
    };
    physdev(pd::PHYSDEVOP_IRQ_STATUS_QUERY, &mut q)?;
    Ok(q.flags)
}

/// `PHYSDEVOP_eoi`: the guest has handled `pirq` (a no-op for MSI, which is
/// edge-triggered; needed for level-triggered sources).
pub fn physdev_eoi(pirq: u32) -> Result<()> {
    physdev(pd::PHYSDEVOP_EOI, &mut pd::PhysdevEoi { irq: pirq }).map(|_| ())
}

// ---------------------------------------------------------------------------------------
// callbacks, traps, vm_assist, multicall, memory mapping

/// `CALLBACKOP_register`.
pub fn callback_register(kind: u16, flags: u16, address: u64) -> Result<u64> {
    let mut r = CallbackRegister::new_zeroed();
    r.kind = kind;
    r.flags = flags;
    r.address = address;
    check(op_struct(nr::CALLBACK_OP, CALLBACKOP_REGISTER, &mut r))
}

/// `CALLBACKOP_unregister`.
pub fn callback_unregister(kind: u16) -> Result<u64> {
    let mut r = CallbackUnregister::new_zeroed();
    r.kind = kind;
    check(op_struct(nr::CALLBACK_OP, CALLBACKOP_UNREGISTER, &mut r))
}

/// `set_trap_table(table)`. The table must end with an entry whose address is 0 (Xen reads
/// until it finds one); anything else is refused locally with -EINVAL.
pub fn set_trap_table(table: &[TrapInfo]) -> Result<u64> {
    match table.last() {
        Some(t) if t.address == 0 => {}
        _ => return Err(Error::local(Errno::EINVAL)),
    }
    // SAFETY: the hypervisor reads entries up to and including the terminating one, which
    // is inside `table`.
    check(unsafe { call(nr::SET_TRAP_TABLE, [table.as_ptr() as u64, 0, 0, 0, 0]) })
}

/// `set_trap_table(NULL)`: clear the whole virtual IDT.
pub fn clear_trap_table() -> Result<u64> {
    // SAFETY: NULL means "clear", nothing is read.
    check(unsafe { call(nr::SET_TRAP_TABLE, [0; 5]) })
}

/// `vm_assist(cmd, type)`.
pub fn vm_assist(cmd: u32, kind: u32) -> Result<u64> {
    // SAFETY: scalar arguments only.
    check(unsafe { call(nr::VM_ASSIST, [u64::from(cmd), u64::from(kind), 0, 0, 0]) })
}

/// `multicall(entries)`, for entries whose arguments are all small scalars (so no entry can
/// make the hypervisor touch our memory); others are refused locally with -EINVAL. Results
/// are written back into `entries[i].result`.
pub fn multicall_scalars(entries: &mut [MulticallEntry]) -> Result<u64> {
    if entries
        .iter()
        .any(|e| e.args.iter().any(|&a| a >= PROBE_SCALAR_LIMIT))
    {
        return Err(Error::local(Errno::EINVAL));
    }
    let n = u32::try_from(entries.len()).map_err(|_| Error::local(Errno::EINVAL))?;
    // SAFETY: the hypervisor reads and writes `n` entries of `entries`; the entries'
    // arguments are scalars (checked above).
    check(unsafe {
        call(
            nr::MULTICALL,
            [entries.as_mut_ptr() as u64, u64::from(n), 0, 0, 0],
        )
    })
}

/// Map the shared_info frame (machine address `maddr`) RW at our reserved page with
/// `update_va_mapping`, as Linux and Mini-OS do. Returns the VA.
pub(crate) fn map_shared_info(maddr: u64) -> Result<u64> {
    const PTE_FLAGS: u64 = 0x1 | 0x2 | 0x20 | 0x40; // present, RW, accessed, dirty
    let va = super::shared_info_va();
    if va == 0 || maddr & 0xfff != 0 {
        return Err(Error::local(Errno::EINVAL));
    }
    // SAFETY: replaces the PTE of our own reserved .bss page (nothing else lives there) with
    // the shared_info frame; the hypervisor validates the new entry.
    check(unsafe {
        call(
            nr::UPDATE_VA_MAPPING,
            [va, maddr | PTE_FLAGS, UVMF_INVLPG, 0, 0],
        )
    })?;
    Ok(va)
}

// ---------------------------------------------------------------------------------------
// stack_switch (3), fpu_taskswitch (5), set_segment_base (25), mmuext_op (26): the vCPU
// state behind the guest-entry paths (ABI.md §1.10, §2.1).

/// `stack_switch(ss, sp)`: the kernel stack the hypervisor uses for frames when it enters
/// guest-kernel mode from guest-user mode. Xen always returns 0.
///
/// Only [`super::user`] enters user mode, and it sets `sp` to its own dedicated stack first
/// (see [`super::user::switch_kernel_stack`]); kernels should use that.
pub(crate) fn stack_switch(ss: u16, sp: u64) -> Result<u64> {
    // SAFETY: scalar arguments; the hypervisor does not access `sp` now. It writes frames
    // there only when entering kernel mode from user mode (see the function's docs).
    check(unsafe { call(nr::STACK_SWITCH, [u64::from(ss), sp, 0, 0, 0]) })
}

/// `fpu_taskswitch(set)`: set (true) or clear the virtual CR0.TS. While it is set the next
/// FPU/SSE instruction raises #NM (vector 7) to the kernel's handler.
pub fn fpu_taskswitch(set: bool) -> Result<u64> {
    // SAFETY: scalar argument only.
    check(unsafe { call(nr::FPU_TASKSWITCH, [u64::from(set), 0, 0, 0, 0]) })
}

/// `set_segment_base(which, base)` (`SEGBASE_*`). Any `which` is passed through so that a
/// test can see the hypervisor refuse unknown ones.
pub fn set_segment_base(which: u32, base: u64) -> Result<u64> {
    // SAFETY: scalar arguments; the hypervisor only loads a segment base. Our Rust code does
    // not address memory through FS or GS.
    check(unsafe { call(nr::SET_SEGMENT_BASE, [u64::from(which), base, 0, 0, 0]) })
}

/// `mmuext_op` with one `MMUEXT_NEW_USER_BASEPTR`: the L4 the hypervisor loads while the
/// vCPU is in guest-user mode (`mfn` must be one of our L4 page tables, 0 = none).
pub fn mmuext_new_user_baseptr(mfn: u64) -> Result<u64> {
    let mut op = MmuextOp::new_zeroed();
    op.cmd = MMUEXT_NEW_USER_BASEPTR;
    op.arg1 = mfn;
    // SAFETY: the hypervisor reads one `MmuextOp` from `op`; `done` is NULL. The command
    // only changes which L4 user mode runs on, never our kernel mappings.
    check(unsafe {
        call(
            nr::MMUEXT_OP,
            [
                &mut op as *mut MmuextOp as u64,
                1,
                0,
                u64::from(DomId::SELF.raw()),
                0,
            ],
        )
    })
}

// ---------------------------------------------------------------------------------------
// sysctl (35) — rxen's own layouts (abi-names.md), Xen's command numbers.

/// `SYSCTL_readconsole`, incremental from `index`: returns (bytes written, next index).
pub fn sysctl_readconsole(index: u32, buf: &mut [u8]) -> Result<(usize, u32)> {
    let count = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    let mut rc = SysctlReadconsole::new_zeroed();
    rc.incremental = 1;
    rc.index = index;
    rc.buffer = buf.as_mut_ptr() as u64;
    rc.count = count;
    let mut s = Sysctl::new(SYSCTL_READCONSOLE, &rc);
    // SAFETY: the hypervisor reads/writes the `Sysctl` and writes at most `count` bytes to
    // `buf`.
    check(unsafe { call(nr::SYSCTL, [&mut s as *mut Sysctl as u64, 0, 0, 0, 0]) })?;
    let out = s.readconsole();
    Ok(((out.count as usize).min(buf.len()), out.index))
}

/// `SYSCTL_physinfo`.
pub fn sysctl_physinfo() -> Result<SysctlPhysinfo> {
    let mut s = Sysctl::new(SYSCTL_PHYSINFO, &SysctlPhysinfo::new_zeroed());
    // SAFETY: the hypervisor reads/writes the `Sysctl` only.
    check(unsafe { call(nr::SYSCTL, [&mut s as *mut Sysctl as u64, 0, 0, 0, 0]) })?;
    Ok(s.physinfo())
}

// ---------------------------------------------------------------------------------------
// The PV memory hypercalls (ABI.md §2.1, §3.3): mmu_update (1), set_gdt (2),
// update_descriptor (10), memory_op (12), multicall (13) with pointer arguments,
// update_va_mapping (14), mmuext_op (26). Those that change the address space are unsafe:
// the hypervisor keeps other domains safe, not our own Rust invariants. The safe layer is
// [`super::mmu`].

/// Outcome of a batched call (`mmu_update`, `mmuext_op`): the return value and how many
/// requests the hypervisor reported as done through the `done` pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// RAX: 0, or the -errno of the first request that failed.
    pub result: Result<u64>,
    /// `*done`.
    pub done: u32,
}

/// `mmu_update(reqs, count, &done, foreigndom)`.
///
/// # Safety
/// Every request must leave the mappings the kernel relies on intact: a normal update
/// may only change entries that no Rust reference or running code depends on.
pub unsafe fn mmu_update(reqs: &[MmuUpdate], foreigndom: u32) -> Batch {
    // SAFETY: the requests' effects are the caller's contract.
    unsafe { batch(nr::MMU_UPDATE, reqs, foreigndom) }
}

/// `mmuext_op(ops, count, &done, foreigndom)`.
///
/// # Safety
/// As [`mmu_update`]: `NEW_BASEPTR` must name an L4 that maps the running kernel exactly
/// as the current one does, and flushes/pins are harmless.
pub unsafe fn mmuext_op(ops: &[MmuextOp], foreigndom: u32) -> Batch {
    // SAFETY: the ops' effects are the caller's contract.
    unsafe { batch(nr::MMUEXT_OP, ops, foreigndom) }
}

/// A `(list, count, &done, foreigndom)` hypercall (`mmu_update`, `mmuext_op`).
///
/// # Safety
/// As the hypercall `op`: its elements' effects are the caller's contract.
unsafe fn batch<T>(op: u64, items: &[T], foreigndom: u32) -> Batch {
    let Ok(count) = u32::try_from(items.len()) else {
        return Batch {
            result: Err(Error::local(Errno::EINVAL)),
            done: 0,
        };
    };
    let mut done = 0u32;
    // SAFETY: the hypervisor reads `count` elements from `items` and writes one u32 to
    // `done`; the effect of the elements is the caller's contract.
    let ret = unsafe {
        call(
            op,
            [
                items.as_ptr() as u64,
                u64::from(count),
                &mut done as *mut u32 as u64,
                u64::from(foreigndom),
                0,
            ],
        )
    };
    Batch {
        result: check(ret),
        done,
    }
}

/// One `mmuext_op` with `done` = NULL.
///
/// # Safety
/// As [`mmuext_op`].
pub unsafe fn mmuext_one(cmd: u32, arg1: u64, arg2: u64) -> Result<u64> {
    let op = MmuextOp {
        cmd,
        pad: 0,
        arg1,
        arg2,
    };
    // SAFETY: the hypervisor reads one op; `done` is NULL; effects per the caller.
    check(unsafe {
        call(
            nr::MMUEXT_OP,
            [
                &op as *const MmuextOp as u64,
                1,
                0,
                u64::from(DomId::SELF.raw()),
                0,
            ],
        )
    })
}

/// `update_va_mapping(va, val, flags)`: replace the L1 entry of `va` in the current page
/// tables.
///
/// # Safety
/// Nothing the kernel relies on may live at `va` unless `val` maps the same frame with
/// at least the same rights.
pub unsafe fn update_va_mapping(va: u64, val: u64, flags: u64) -> Result<u64> {
    // SAFETY: scalar arguments; the mapping change is the caller's contract.
    check(unsafe { call(nr::UPDATE_VA_MAPPING, [va, val, flags, 0, 0]) })
}

/// `multicall(entries)` with any arguments; results land in `entries[i].result`.
///
/// # Safety
/// Every entry must be safe to issue as its own hypercall (pointers valid for what the
/// hypervisor reads and writes, address-space changes as in the functions above).
pub unsafe fn multicall(entries: &mut [MulticallEntry]) -> Result<u64> {
    let n = u32::try_from(entries.len()).map_err(|_| Error::local(Errno::EINVAL))?;
    // SAFETY: the hypervisor reads and writes `n` entries; their effects per the caller.
    check(unsafe {
        call(
            nr::MULTICALL,
            [entries.as_mut_ptr() as u64, u64::from(n), 0, 0, 0],
        )
    })
}

/// `set_gdt(frames, entries)`: install the GDT of this vCPU from machine frames. Our
/// kernels only ever load the hypervisor's flat selectors, so no loaded segment depends on
/// the guest GDT.
pub fn set_gdt(frames: &[u64], entries: u32) -> Result<u64> {
    let need = entries.div_ceil(512) as usize;
    if need > frames.len() {
        return Err(Error::local(Errno::EINVAL));
    }
    // SAFETY: the hypervisor reads `ceil(entries / 512)` MFNs from `frames` (checked).
    check(unsafe {
        call(
            nr::SET_GDT,
            [frames.as_ptr() as u64, u64::from(entries), 0, 0, 0],
        )
    })
}

/// `update_descriptor(maddr, desc)`.
///
/// # Safety
/// `maddr` may name any frame we own that is a descriptor page or an ordinary writable
/// page: the 8 bytes there must not be memory the kernel relies on.
pub unsafe fn update_descriptor(maddr: u64, desc: u64) -> Result<u64> {
    // SAFETY: scalar arguments; the store is the caller's contract.
    check(unsafe { call(nr::UPDATE_DESCRIPTOR, [maddr, desc, 0, 0, 0]) })
}

/// `memory_op(XENMEM_increase/decrease_reservation | populate_physmap)` for `DOMID_SELF`
/// with `frames.len()` extents of order `order`. PV: decrease takes MFNs; populate takes
/// PFNs and gets MFNs back; increase gets MFNs back. Returns the extents done.
///
/// Safe: a frame given back stays allocated while any mapping still references it.
pub fn memory_reservation(cmd: u32, frames: &mut [u64], order: u32) -> Result<u64> {
    let mut r = XenMemoryReservation::new_zeroed();
    r.extent_start = frames.as_mut_ptr() as u64;
    r.nr_extents = frames.len() as u64;
    r.extent_order = order;
    r.domid = DomId::SELF.raw();
    // SAFETY: the hypervisor reads the reservation and reads/writes `nr_extents` u64s at
    // `extent_start`, which is `frames`.
    check(unsafe {
        call(
            nr::MEMORY_OP,
            [
                u64::from(cmd),
                &mut r as *mut XenMemoryReservation as u64,
                0,
                0,
                0,
            ],
        )
    })
}

/// `memory_op(XENMEM_exchange)` for `DOMID_SELF`, 4 KiB extents: gives up the frames
/// (MFNs) in `input` and gets new frames at the PFNs in `output`, whose MFNs are written
/// back into `output`. Returns (result, nr_exchanged).
pub fn memory_exchange(input: &mut [u64], output: &mut [u64]) -> (Result<u64>, u64) {
    let mut x = [0u64; 9];
    let mut r_in = XenMemoryReservation::new_zeroed();
    r_in.extent_start = input.as_mut_ptr() as u64;
    r_in.nr_extents = input.len() as u64;
    r_in.domid = DomId::SELF.raw();
    let mut r_out = r_in;
    r_out.extent_start = output.as_mut_ptr() as u64;
    r_out.nr_extents = output.len() as u64;
    x[..4].copy_from_slice(<[u64; 4]>::ref_from_bytes(r_in.as_bytes()).map_or(&[0; 4], |a| a));
    x[4..8].copy_from_slice(<[u64; 4]>::ref_from_bytes(r_out.as_bytes()).map_or(&[0; 4], |a| a));
    // SAFETY: the hypervisor reads the two reservations, reads `input`, reads and writes
    // `output` (both live slices of the given lengths) and writes `nr_exchanged` (x[8]).
    let r = check(unsafe {
        call(
            nr::MEMORY_OP,
            [
                u64::from(xen_abi::memory::XENMEM_EXCHANGE),
                x.as_mut_ptr() as u64,
                0,
                0,
                0,
            ],
        )
    });
    (r, x[8])
}

/// `memory_op(cmd, &domid)` (current/maximum reservation, maximum_gpfn).
pub fn memory_op_domid(cmd: u32, domid: u16) -> Result<u64> {
    let mut d = domid;
    check(op_struct(nr::MEMORY_OP, cmd, &mut d))
}

/// `memory_op(XENMEM_maximum_ram_page, NULL)`.
pub fn maximum_ram_page() -> Result<u64> {
    check(op_null(
        nr::MEMORY_OP,
        xen_abi::memory::XENMEM_MAXIMUM_RAM_PAGE,
    ))
}

/// `memory_op(XENMEM_machphys_mapping)`.
pub fn machphys_mapping() -> Result<XenMachphysMapping> {
    let mut m = XenMachphysMapping::new_zeroed();
    check(op_struct(
        nr::MEMORY_OP,
        xen_abi::memory::XENMEM_MACHPHYS_MAPPING,
        &mut m,
    ))?;
    Ok(m)
}

/// `xen_version(XENVER_version)` always through an inline `syscall` (the benchmark's null
/// hypercall), returning the raw RAX.
pub fn null_hypercall_syscall() -> i64 {
    // SAFETY: NULL argument; XENVER_version reads nothing.
    unsafe {
        syscall_only(
            nr::XEN_VERSION,
            [u64::from(version::XENVER_VERSION), 0, 0, 0, 0],
        )
    }
}

/// # Safety
/// As [`syscall5`].
unsafe fn syscall_only(op: u64, a: [u64; 5]) -> i64 {
    // SAFETY: per the caller.
    unsafe { call_on(Path::Syscall, op, a) }
}
