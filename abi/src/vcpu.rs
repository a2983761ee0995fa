//! `vcpu_op` hypercall (`xen/include/public/vcpu.h`): bringing vCPUs up and down, runstate
//! information, per-vCPU timers and relocating `vcpu_info`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Set the initial context of an offline vCPU (`vcpu_guest_context`).
pub const VCPUOP_INITIALISE: u32 = 0;
/// Bring an initialised vCPU up.
pub const VCPUOP_UP: u32 = 1;
/// Take a vCPU down.
pub const VCPUOP_DOWN: u32 = 2;
/// Returns 1 if the vCPU is up.
pub const VCPUOP_IS_UP: u32 = 3;
/// Fill a [`VcpuRunstateInfo`].
pub const VCPUOP_GET_RUNSTATE_INFO: u32 = 4;
/// Register a guest address the hypervisor keeps a [`VcpuRunstateInfo`] updated at
/// ([`VcpuRegisterRunstateMemoryArea`]).
pub const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u32 = 5;
/// Start a periodic timer ([`VcpuSetPeriodicTimer`]).
pub const VCPUOP_SET_PERIODIC_TIMER: u32 = 6;
/// Stop the periodic timer.
pub const VCPUOP_STOP_PERIODIC_TIMER: u32 = 7;
/// Arm the single-shot timer ([`VcpuSetSingleshotTimer`]).
pub const VCPUOP_SET_SINGLESHOT_TIMER: u32 = 8;
/// Disarm the single-shot timer.
pub const VCPUOP_STOP_SINGLESHOT_TIMER: u32 = 9;
/// Move this vCPU's `vcpu_info` to a guest frame ([`VcpuRegisterVcpuInfo`]).
pub const VCPUOP_REGISTER_VCPU_INFO: u32 = 10;
/// Send an NMI to a vCPU.
pub const VCPUOP_SEND_NMI: u32 = 11;
/// Get the physical id of the pCPU ([`VcpuGetPhysid`]); dom0 only.
pub const VCPUOP_GET_PHYSID: u32 = 12;
/// Register a second `vcpu_time_info` copy (for a vDSO).
pub const VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA: u32 = 13;
/// Register the runstate area by guest physical address.
pub const VCPUOP_REGISTER_RUNSTATE_PHYS_AREA: u32 = 14;
/// Register the vCPU time area by guest physical address.
pub const VCPUOP_REGISTER_VCPU_TIME_PHYS_AREA: u32 = 15;

/// Runstate: running on a physical CPU.
pub const RUNSTATE_RUNNING: i32 = 0;
/// Runstate: runnable, waiting for a CPU.
pub const RUNSTATE_RUNNABLE: i32 = 1;
/// Runstate: blocked (waiting for an event).
pub const RUNSTATE_BLOCKED: i32 = 2;
/// Runstate: offline (down, or paused by the toolstack).
pub const RUNSTATE_OFFLINE: i32 = 3;
/// Set in `state_entry_time` while the hypervisor updates a registered runstate area
/// (with `VMASST_TYPE_runstate_update_flag`).
pub const XEN_RUNSTATE_UPDATE: u64 = 1 << 63;

/// `VcpuSetSingleshotTimer::flags`: fail with `-ETIME` if the timeout is in the past.
pub const VCPU_SSHOTTMR_FUTURE: u32 = 1 << 0;

/// `struct vcpu_runstate_info` (48 bytes, hypervisor writes).
#[doc(alias = "vcpu_runstate_info")]
#[doc(alias = "vcpu_runstate_info_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuRunstateInfo {
    /// Current `RUNSTATE_*`.
    pub state: i32,
    /// Padding.
    pub pad: u32,
    /// System time when `state` was entered.
    pub state_entry_time: u64,
    /// Total ns spent in each `RUNSTATE_*`.
    pub time: [u64; 4],
}
assert_layout!(VcpuRunstateInfo, 48, { state: 0, pad: 4, state_entry_time: 8, time: 16 });

/// `struct vcpu_register_runstate_memory_area` (8 bytes, guest writes).
#[doc(alias = "vcpu_register_runstate_memory_area")]
#[doc(alias = "vcpu_register_runstate_memory_area_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuRegisterRunstateMemoryArea {
    /// Guest virtual address of a [`VcpuRunstateInfo`] (0 = unregister).
    pub addr: u64,
}
assert_layout!(VcpuRegisterRunstateMemoryArea, 8, { addr: 0 });

/// `struct vcpu_set_periodic_timer` (8 bytes, guest writes).
#[doc(alias = "vcpu_set_periodic_timer")]
#[doc(alias = "vcpu_set_periodic_timer_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuSetPeriodicTimer {
    /// Period in ns.
    pub period_ns: u64,
}
assert_layout!(VcpuSetPeriodicTimer, 8, { period_ns: 0 });

/// `struct vcpu_set_singleshot_timer` (16 bytes, guest writes).
#[doc(alias = "vcpu_set_singleshot_timer")]
#[doc(alias = "vcpu_set_singleshot_timer_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuSetSingleshotTimer {
    /// Absolute system time of the timeout, in ns.
    pub timeout_abs_ns: u64,
    /// `VCPU_SSHOTTMR_*`.
    pub flags: u32,
    /// Padding.
    pub pad: u32,
}
assert_layout!(VcpuSetSingleshotTimer, 16, { timeout_abs_ns: 0, flags: 8, pad: 12 });

/// `struct vcpu_register_vcpu_info` (16 bytes, guest writes).
#[doc(alias = "vcpu_register_vcpu_info")]
#[doc(alias = "vcpu_register_vcpu_info_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuRegisterVcpuInfo {
    /// MFN of the frame holding the new `vcpu_info`.
    pub mfn: u64,
    /// Offset of the `vcpu_info` within that frame.
    pub offset: u32,
    /// Reserved, must be 0.
    pub rsvd: u32,
}
assert_layout!(VcpuRegisterVcpuInfo, 16, { mfn: 0, offset: 8, rsvd: 12 });

/// `struct vcpu_register_time_memory_area` (8 bytes, guest writes).
#[doc(alias = "vcpu_register_time_memory_area")]
#[doc(alias = "vcpu_register_time_memory_area_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuRegisterTimeMemoryArea {
    /// Guest virtual address of a `vcpu_time_info` copy (0 = unregister).
    pub addr: u64,
}
assert_layout!(VcpuRegisterTimeMemoryArea, 8, { addr: 0 });

/// `struct vcpu_get_physid` (8 bytes, hypervisor writes).
#[doc(alias = "vcpu_get_physid")]
#[doc(alias = "vcpu_get_physid_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuGetPhysid {
    /// Physical CPU id (APIC ids in the low/high halves).
    pub phys_id: u64,
}
assert_layout!(VcpuGetPhysid, 8, { phys_id: 0 });
