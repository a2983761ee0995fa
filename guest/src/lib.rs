//! Runtime for rxen's Rust PV kernels (placeholder, being written).
#![cfg_attr(not(test), no_std)]
