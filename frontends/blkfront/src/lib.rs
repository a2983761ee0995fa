//! blkfront: the guest side of Xen's block split driver (`xen-blkfront`), as portable logic.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
