//! Xen's public pv64 ABI as Rust types (placeholder, being written).
#![no_std]
#![forbid(unsafe_code)]
