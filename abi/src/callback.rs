//! `callback_op` hypercall (`xen/include/public/callback.h`): registering the guest's entry
//! points for event upcalls, failsafe, syscall and NMI.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Event upcall callback.
pub const CALLBACKTYPE_EVENT: u16 = 0;
/// Failsafe callback (segment reload failure on return to the guest).
pub const CALLBACKTYPE_FAILSAFE: u16 = 1;
/// 64-bit `syscall` from guest user mode.
pub const CALLBACKTYPE_SYSCALL: u16 = 2;
/// Pre-0x00030207 number of the sysenter callback (kept by Xen as "deprecated").
pub const CALLBACKTYPE_SYSENTER_DEPRECATED: u16 = 3;
/// NMI callback.
pub const CALLBACKTYPE_NMI: u16 = 4;
/// 32-bit `syscall` from compat user mode.
pub const CALLBACKTYPE_SYSCALL32: u16 = 7;
/// `sysenter` from user mode (Xen's value for interface versions >= 0x00030207).
pub const CALLBACKTYPE_SYSENTER: u16 = 5;

/// Callback flag: mask events on entry.
pub const CALLBACKF_MASK_EVENTS: u16 = 1 << 0;

/// Register a callback ([`CallbackRegister`]).
pub const CALLBACKOP_REGISTER: u32 = 0;
/// Unregister a callback ([`CallbackUnregister`]).
pub const CALLBACKOP_UNREGISTER: u32 = 1;

/// `struct callback_register` (16 bytes), argument of `CALLBACKOP_register` (guest writes).
#[doc(alias = "callback_register")]
#[doc(alias = "callback_register_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct CallbackRegister {
    /// `CALLBACKTYPE_*` (C field `type`).
    pub kind: u16,
    /// `CALLBACKF_*`.
    pub flags: u16,
    /// Padding.
    pub pad: u32,
    /// Entry address.
    pub address: u64,
}
assert_layout!(CallbackRegister, 16, { kind: 0, flags: 2, pad: 4, address: 8 });

/// `struct callback_unregister` (4 bytes), argument of `CALLBACKOP_unregister` (guest
/// writes).
#[doc(alias = "callback_unregister")]
#[doc(alias = "callback_unregister_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct CallbackUnregister {
    /// `CALLBACKTYPE_*` (C field `type`).
    pub kind: u16,
    /// Unused (C field `_unused`).
    pub pad: u16,
}
assert_layout!(CallbackUnregister, 4, { kind: 0, pad: 2 });
