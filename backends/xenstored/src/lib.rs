//! rxen's xenstored: Xen's xenstore database and wire protocol for dom0.
//!
//! Xenstore is Xen's shared configuration tree (`docs/misc/xenstore.txt`): domains read,
//! write and watch paths such as `/local/domain/<domid>/device/vbd/51712/state` to find
//! their devices and to run the xenbus handshakes with the backends. This crate is the
//! daemon side, portable and free of hypercalls:
//!
//! * [`store`]: the node tree (values, permissions, generation counts), transactions with
//!   conflict detection, watches (incl. `@introduceDomain` / `@releaseDomain`), per-domain
//!   quotas, the request dispatcher for wire messages, and an in-process API for dom0's
//!   toolstack ([`Store::read`], [`Store::write`], [`Store::watch`], [`Store::introduce`],
//!   ...).
//! * [`wire`]: `xsd_sockmsg` framing, message types, error names (`xs_wire.h`).
//! * [`ring`]: the per-domain ring page (`xenstore_domain_interface`) behind the
//!   [`ring::RingMemory`] trait, which dom0 implements over its foreign mapping.
//! * [`path`], [`perms`]: path canonicalisation and permission lists.
//!
//! Nothing a guest sends can panic this crate: malformed messages get `ERROR` replies,
//! oversized ones and bad ring indices break that one connection.
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

extern crate alloc;

pub mod path;
pub mod perms;
pub mod ring;
pub mod store;
pub mod wire;

pub use perms::{Access, Perm, Perms};
pub use ring::{ArrayRing, RingError, RingMemory, Serviced};
pub use store::{Broken, Caller, Quotas, RingInfo, Store, WatchEvent, XsResult, DOM0};
pub use wire::{MsgType, XsError};
pub use xen_abi::DomId;
