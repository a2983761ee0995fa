//! Network device wire format (`xen/include/public/io/netif.h`, ABI.md §5.3): the TX ring
//! (guest → backend) and the RX ring (backend → guest), each one page.

use xen_abi::GrantRef;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::{entry_size, ring_size, BackRing, FrontRing};

/// `NETTXF_csum_blank`: the L4 checksum is not filled in.
pub const NETTXF_CSUM_BLANK: u16 = 1 << 0;
/// `NETTXF_data_validated`: the packet's checksums are known good.
pub const NETTXF_DATA_VALIDATED: u16 = 1 << 1;
/// `NETTXF_more_data`: another fragment of this packet follows.
pub const NETTXF_MORE_DATA: u16 = 1 << 2;
/// `NETTXF_extra_info`: the next slot holds a [`NetifExtraInfo`].
pub const NETTXF_EXTRA_INFO: u16 = 1 << 3;

/// `NETRXF_data_validated`.
pub const NETRXF_DATA_VALIDATED: u16 = 1 << 0;
/// `NETRXF_csum_blank`.
pub const NETRXF_CSUM_BLANK: u16 = 1 << 1;
/// `NETRXF_more_data`: the packet continues in the next slot.
pub const NETRXF_MORE_DATA: u16 = 1 << 2;
/// `NETRXF_extra_info`: the next slot holds a [`NetifExtraInfo`].
pub const NETRXF_EXTRA_INFO: u16 = 1 << 3;
/// `NETRXF_gso_prefix`.
pub const NETRXF_GSO_PREFIX: u16 = 1 << 4;

/// `XEN_NETIF_EXTRA_TYPE_GSO`.
pub const XEN_NETIF_EXTRA_TYPE_GSO: u8 = 1;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// `XEN_NETIF_EXTRA_TYPE_HASH`.
pub const XEN_NETIF_EXTRA_TYPE_HASH: u8 = 4;
/// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra-info slot follows.
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 1;
/// `XEN_NETIF_GSO_TYPE_TCPV4`.
pub const XEN_NETIF_GSO_TYPE_TCPV4: u8 = 1;
/// `XEN_NETIF_GSO_TYPE_TCPV6`.
pub const XEN_NETIF_GSO_TYPE_TCPV6: u8 = 2;

/// `NETIF_RSP_OKAY`.
pub const NETIF_RSP_OKAY: i16 = 0;
/// `NETIF_RSP_ERROR`.
pub const NETIF_RSP_ERROR: i16 = -1;
/// `NETIF_RSP_DROPPED`.
pub const NETIF_RSP_DROPPED: i16 = -2;
/// `NETIF_RSP_NULL`: the response occupying an extra-info slot.
pub const NETIF_RSP_NULL: i16 = 1;

/// `XEN_NETIF_NR_SLOTS_MIN`: slots per packet a backend must accept.
pub const XEN_NETIF_NR_SLOTS_MIN: usize = 18;
/// `XEN_NETIF_MAX_TX_SIZE`: largest packet.
pub const XEN_NETIF_MAX_TX_SIZE: u32 = 0xFFFF;

/// A transmit slot (`netif_tx_request`). The first slot of a packet carries the whole
/// packet length in `size`; later fragments their own length.
#[doc(alias = "netif_tx_request")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NetifTxRequest {
    /// \[GST\] Grant of the fragment's page.
    pub gref: GrantRef,
    /// \[GST\] Offset of the fragment in the page.
    pub offset: u16,
    /// \[GST\] `NETTXF_*`.
    pub flags: u16,
    /// \[GST\] Echoed in the response.
    pub id: u16,
    /// \[GST\] Packet length (first slot) or fragment length.
    pub size: u16,
}
assert_layout!(NetifTxRequest, 12, { gref: 0, offset: 4, flags: 6, id: 8, size: 10 });

/// A transmit completion (`netif_tx_response`), one per request slot.
#[doc(alias = "netif_tx_response")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NetifTxResponse {
    /// \[XEN: backend\] The request's `id`.
    pub id: u16,
    /// \[XEN\] `NETIF_RSP_*`.
    pub status: i16,
}
assert_layout!(NetifTxResponse, 4, { id: 0, status: 2 });

/// A receive buffer posted by the frontend (`netif_rx_request`): one whole granted page.
#[doc(alias = "netif_rx_request")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NetifRxRequest {
    /// \[GST\] Buffer id.
    pub id: u16,
    /// Padding.
    pub pad: u16,
    /// \[GST\] Grant of the buffer page (writable by the backend).
    pub gref: GrantRef,
}
assert_layout!(NetifRxRequest, 8, { id: 0, pad: 2, gref: 4 });

/// A received packet slot (`netif_rx_response`). Linux ignores `id` and assumes the
/// response sits in the slot of the request it consumed.
#[doc(alias = "netif_rx_response")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NetifRxResponse {
    /// \[XEN: backend\] The request's `id`.
    pub id: u16,
    /// \[XEN\] Offset of the data in the page.
    pub offset: u16,
    /// \[XEN\] `NETRXF_*`.
    pub flags: u16,
    /// \[XEN\] Bytes in this slot (> 0) or `NETIF_RSP_*` (≤ 0); `offset + status` ≤ 4096.
    pub status: i16,
}
assert_layout!(NetifRxResponse, 8, { id: 0, offset: 2, flags: 4, status: 6 });

/// An extra-info slot (`netif_extra_info`), following a slot flagged `*_extra_info`:
/// `type_` selects the meaning of the 6-byte union `data`.
#[doc(alias = "netif_extra_info")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NetifExtraInfo {
    /// `XEN_NETIF_EXTRA_TYPE_*`.
    pub type_: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// The union: GSO ([`NetifExtraGso`]), multicast address (6 bytes), or hash
    /// (`type u8, alg u8, value[4]`).
    pub data: [u8; 6],
}
assert_layout!(NetifExtraInfo, 8, { type_: 0, flags: 1, data: 2 });

/// The GSO member of [`NetifExtraInfo::data`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NetifExtraGso {
    /// Maximum segment size.
    pub size: u16,
    /// `XEN_NETIF_GSO_TYPE_*`.
    pub type_: u8,
    /// Padding.
    pub pad: u8,
    /// `XEN_NETIF_GSO_FEAT_*` (none defined).
    pub features: u16,
}
assert_layout!(NetifExtraGso, 6, { size: 0, type_: 2, pad: 3, features: 4 });

impl NetifExtraInfo {
    /// A GSO extra-info slot.
    pub fn gso(gso: NetifExtraGso, flags: u8) -> Self {
        Self {
            type_: XEN_NETIF_EXTRA_TYPE_GSO,
            flags,
            data: zerocopy::transmute!(gso),
        }
    }

    /// The union read as GSO parameters (check `type_` first).
    pub fn as_gso(&self) -> NetifExtraGso {
        zerocopy::transmute!(self.data)
    }

    /// The extra info carried in a TX request slot (first 8 of its 12 bytes).
    pub fn from_tx_slot(slot: &NetifTxRequest) -> Self {
        let mut extra = Self::default();
        extra
            .as_mut_bytes()
            .copy_from_slice(slot.as_bytes().get(..8).unwrap_or(&[0; 8]));
        extra
    }

    /// A TX request slot carrying this extra info (4 trailing bytes zero).
    pub fn to_tx_slot(&self) -> NetifTxRequest {
        let mut bytes = [0u8; 12];
        if let Some(head) = bytes.get_mut(..8) {
            head.copy_from_slice(self.as_bytes());
        }
        zerocopy::transmute!(bytes)
    }

    /// The extra info carried in an RX response slot.
    pub fn from_rx_slot(slot: &NetifRxResponse) -> Self {
        zerocopy::transmute!(*slot)
    }

    /// An RX response slot carrying this extra info.
    pub fn to_rx_slot(&self) -> NetifRxResponse {
        zerocopy::transmute!(*self)
    }
}

/// Slots in a one-page TX ring (256; slot 12 bytes).
pub const NET_TX_RING_SIZE: u32 = ring_size(
    xen_abi::PAGE_SIZE,
    entry_size::<NetifTxRequest, NetifTxResponse>(),
);
/// Slots in a one-page RX ring (256; slot 8 bytes).
pub const NET_RX_RING_SIZE: u32 = ring_size(
    xen_abi::PAGE_SIZE,
    entry_size::<NetifRxRequest, NetifRxResponse>(),
);
const _: () = {
    assert!(entry_size::<NetifTxRequest, NetifTxResponse>() == 12);
    assert!(entry_size::<NetifRxRequest, NetifRxResponse>() == 8);
    assert!(NET_TX_RING_SIZE == 256);
    assert!(NET_RX_RING_SIZE == 256);
};

/// Frontend end of the TX ring.
pub type NetTxFrontRing<M> = FrontRing<NetifTxRequest, NetifTxResponse, M>;
/// Backend end of the TX ring.
pub type NetTxBackRing<M> = BackRing<NetifTxRequest, NetifTxResponse, M>;
/// Frontend end of the RX ring.
pub type NetRxFrontRing<M> = FrontRing<NetifRxRequest, NetifRxResponse, M>;
/// Backend end of the RX ring.
pub type NetRxBackRing<M> = BackRing<NetifRxRequest, NetifRxResponse, M>;
