//! QEMU harness for rxen's system tests (placeholder, being written).
