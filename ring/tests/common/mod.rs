//! Shared test message types.
#![allow(dead_code)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A test message with a sequence number and a value/check pair derived from it, so a
/// torn, lost, duplicated or reordered message is detected.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Msg {
    pub seq: u64,
    pub value: u64,
    pub check: u64,
}

pub fn mix(x: u64) -> u64 {
    // splitmix64 finaliser.
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Msg {
    pub fn request(seq: u64) -> Self {
        let value = mix(seq);
        Self {
            seq,
            value,
            check: value ^ seq.rotate_left(17) ^ 0x5A5A,
        }
    }

    pub fn response_to(req: &Msg) -> Self {
        let value = req.value.wrapping_mul(3).wrapping_add(1);
        Self {
            seq: req.seq,
            value,
            check: value ^ req.seq.rotate_left(29) ^ 0xA5A5,
        }
    }

    pub fn is_request(&self, seq: u64) -> bool {
        *self == Self::request(seq)
    }

    pub fn is_response(&self, seq: u64) -> bool {
        *self == Self::response_to(&Self::request(seq))
    }
}
