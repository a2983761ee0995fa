//! blkback: the dom0 side of Xen's block split driver (`xen-blkback`), as portable logic.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod device;
pub use device::{BlockDevice, BlockOp, DeviceRequest, DeviceStatus, DiskInfo, DmaSegment, SubmitError};
