//! blkback: the dom0 side of Xen's block split driver (Linux `xen-blkback`), as portable
//! logic: the xenbus handshake ([`Vbd`], [`Blkback`]), the blkif request engine
//! ([`Engine`]) and the interfaces it runs on — a [`Store`] (xenstore), a [`Platform`]
//! (ring mapping, event channels, disks) with a [`GrantMapper`] (batched
//! `GNTMAP_device_map` grant mapping), and a [`BlockDevice`] that DMAs straight into the
//! frontend's pages. dom0's glue (`dom0/src/blkback.rs`) implements the traits with
//! hypercalls; everything here is tested on the host with doubles.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod backend;
pub mod device;
pub mod engine;
pub mod grant;
pub mod request;
pub mod vbd;
pub mod xenbus;

pub use backend::Blkback;
pub use device::{
    BlockDevice, BlockOp, DeviceRequest, DeviceStatus, DiskInfo, DmaSegment, SubmitError,
};
pub use engine::{DeviceLimits, Engine, Progress, Stats};
pub use grant::{GrantError, GrantMapper, MapRequest, Mapping, PersistentGrants};
pub use vbd::{Config, Vbd, VbdStatus};
pub use xenbus::{Platform, PlatformError, Store, XenbusState};
