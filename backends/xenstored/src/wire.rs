//! Xenstore's wire format (`xen/include/public/io/xs_wire.h`): the 16-byte `xsd_sockmsg`
//! header, message types, the error names sent in `XS_ERROR` replies, and the payload
//! limits. Every message in either direction is a header followed by `len` payload bytes.

use alloc::vec::Vec;

/// Size of `struct xsd_sockmsg`.
pub const HEADER_LEN: usize = 16;
/// `XENSTORE_PAYLOAD_MAX`: largest payload in either direction. A client exceeding it has
/// its connection killed.
pub const PAYLOAD_MAX: usize = 4096;
/// `XENSTORE_ABS_PATH_MAX`.
pub const ABS_PATH_MAX: usize = 3072;
/// `XENSTORE_REL_PATH_MAX`.
pub const REL_PATH_MAX: usize = 2048;

/// `enum xsd_sockmsg_type`.
#[doc(alias = "xsd_sockmsg_type")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum MsgType {
    /// `XS_CONTROL` (alias `XS_DEBUG`).
    Control = 0,
    /// `XS_DIRECTORY`.
    Directory = 1,
    /// `XS_READ`.
    Read = 2,
    /// `XS_GET_PERMS`.
    GetPerms = 3,
    /// `XS_WATCH`.
    Watch = 4,
    /// `XS_UNWATCH`.
    Unwatch = 5,
    /// `XS_TRANSACTION_START`.
    TransactionStart = 6,
    /// `XS_TRANSACTION_END`.
    TransactionEnd = 7,
    /// `XS_INTRODUCE`.
    Introduce = 8,
    /// `XS_RELEASE`.
    Release = 9,
    /// `XS_GET_DOMAIN_PATH`.
    GetDomainPath = 10,
    /// `XS_WRITE`.
    Write = 11,
    /// `XS_MKDIR`.
    Mkdir = 12,
    /// `XS_RM`.
    Rm = 13,
    /// `XS_SET_PERMS`.
    SetPerms = 14,
    /// `XS_WATCH_EVENT` (server → client only).
    WatchEvent = 15,
    /// `XS_ERROR` (server → client only).
    Error = 16,
    /// `XS_IS_DOMAIN_INTRODUCED`.
    IsDomainIntroduced = 17,
    /// `XS_RESUME`.
    Resume = 18,
    /// `XS_SET_TARGET`.
    SetTarget = 19,
    /// `XS_RESET_WATCHES` (20, `XS_RESTRICT`, was removed).
    ResetWatches = 21,
    /// `XS_DIRECTORY_PART`.
    DirectoryPart = 22,
    /// `XS_GET_FEATURE`.
    GetFeature = 23,
    /// `XS_SET_FEATURE`.
    SetFeature = 24,
    /// `XS_GET_QUOTA`.
    GetQuota = 25,
    /// `XS_SET_QUOTA`.
    SetQuota = 26,
}

impl MsgType {
    /// The type for a raw header value; `None` for 20 (removed), ≥ 27 and `XS_INVALID`.
    pub const fn from_raw(raw: u32) -> Option<MsgType> {
        use MsgType::*;
        Some(match raw {
            0 => Control,
            1 => Directory,
            2 => Read,
            3 => GetPerms,
            4 => Watch,
            5 => Unwatch,
            6 => TransactionStart,
            7 => TransactionEnd,
            8 => Introduce,
            9 => Release,
            10 => GetDomainPath,
            11 => Write,
            12 => Mkdir,
            13 => Rm,
            14 => SetPerms,
            15 => WatchEvent,
            16 => Error,
            17 => IsDomainIntroduced,
            18 => Resume,
            19 => SetTarget,
            21 => ResetWatches,
            22 => DirectoryPart,
            23 => GetFeature,
            24 => SetFeature,
            25 => GetQuota,
            26 => SetQuota,
            _ => return None,
        })
    }

    /// The raw header value.
    pub const fn raw(self) -> u32 {
        self as u32
    }
}

/// `struct xsd_sockmsg`, decoded (native byte order: little-endian on x86_64).
#[doc(alias = "xsd_sockmsg")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// `type`: a [`MsgType`] value (kept raw: unknown types get `ENOSYS`).
    pub ty: u32,
    /// `req_id`, echoed in the reply.
    pub req_id: u32,
    /// `tx_id`: transaction, 0 = none.
    pub tx_id: u32,
    /// `len`: payload bytes that follow.
    pub len: u32,
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    let mut w = [0u8; 4];
    w.copy_from_slice(s);
    Some(u32::from_le_bytes(w))
}

impl Header {
    /// Decode the first [`HEADER_LEN`] bytes; `None` if there are fewer.
    pub fn parse(b: &[u8]) -> Option<Header> {
        Some(Header {
            ty: le32(b, 0)?,
            req_id: le32(b, 4)?,
            tx_id: le32(b, 8)?,
            len: le32(b, 12)?,
        })
    }

    /// Encode.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        for (chunk, v) in out
            .chunks_exact_mut(4)
            .zip([self.ty, self.req_id, self.tx_id, self.len])
        {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }
}

/// A complete message: header and payload bytes.
pub fn message(ty: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    // Payloads we build are bounded by PAYLOAD_MAX (callers check); saturate anyway.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
    v.extend_from_slice(
        &Header {
            ty,
            req_id,
            tx_id,
            len,
        }
        .to_bytes(),
    );
    v.extend_from_slice(payload);
    v
}

/// The errors xenstore replies with, in `xsd_errors` order. They travel as their **names**
/// (`"ENOENT\0"`), not numbers. Quota violations are `ENOSPC`, as in C xenstored (oxenstored's
/// `EQUOTA` is not in `xs_wire.h`, and Linux would map it to `EINVAL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum XsError {
    /// `EINVAL`: malformed request or path.
    Inval,
    /// `EACCES`: permission denied.
    Acces,
    /// `EEXIST`: already exists (e.g. a duplicate watch).
    Exist,
    /// `EISDIR`.
    IsDir,
    /// `ENOENT`: no such node / transaction / domain.
    NoEnt,
    /// `ENOMEM`.
    NoMem,
    /// `ENOSPC`: a quota is exhausted.
    NoSpc,
    /// `EIO`.
    Io,
    /// `ENOTEMPTY`.
    NotEmpty,
    /// `ENOSYS`: unknown or unsupported message type.
    NoSys,
    /// `EROFS`.
    RoFs,
    /// `EBUSY`: e.g. `TRANSACTION_START` inside a transaction.
    Busy,
    /// `EAGAIN`: the transaction conflicted; retry it.
    Again,
    /// `EISCONN`.
    IsConn,
    /// `E2BIG`: a reply would exceed the payload limit.
    TooBig,
    /// `EPERM`: e.g. an unprivileged domain changing a node's owner.
    Perm,
}

impl XsError {
    /// Every error, in `xs_wire.h` table order.
    pub const ALL: [XsError; 16] = [
        XsError::Inval,
        XsError::Acces,
        XsError::Exist,
        XsError::IsDir,
        XsError::NoEnt,
        XsError::NoMem,
        XsError::NoSpc,
        XsError::Io,
        XsError::NotEmpty,
        XsError::NoSys,
        XsError::RoFs,
        XsError::Busy,
        XsError::Again,
        XsError::IsConn,
        XsError::TooBig,
        XsError::Perm,
    ];

    /// The name sent on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            XsError::Inval => "EINVAL",
            XsError::Acces => "EACCES",
            XsError::Exist => "EEXIST",
            XsError::IsDir => "EISDIR",
            XsError::NoEnt => "ENOENT",
            XsError::NoMem => "ENOMEM",
            XsError::NoSpc => "ENOSPC",
            XsError::Io => "EIO",
            XsError::NotEmpty => "ENOTEMPTY",
            XsError::NoSys => "ENOSYS",
            XsError::RoFs => "EROFS",
            XsError::Busy => "EBUSY",
            XsError::Again => "EAGAIN",
            XsError::IsConn => "EISCONN",
            XsError::TooBig => "E2BIG",
            XsError::Perm => "EPERM",
        }
    }

    /// The error for a wire name (without the NUL).
    pub fn from_name(name: &str) -> Option<XsError> {
        XsError::ALL.into_iter().find(|e| e.name() == name)
    }
}

impl core::fmt::Display for XsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Split a payload into its NUL-terminated strings. `None` if the payload does not end
/// with a NUL (an unterminated last argument) or a string is not UTF-8.
pub fn strings(payload: &[u8]) -> Option<Vec<&str>> {
    let body = payload.strip_suffix(b"\0")?;
    body.split(|&b| b == 0)
        .map(|s| core::str::from_utf8(s).ok())
        .collect()
}

/// The single argument of a one-argument request: the payload must contain exactly one
/// NUL, at its end (C xenstored's `onearg`).
pub fn one_arg(payload: &[u8]) -> Option<&str> {
    let body = payload.strip_suffix(b"\0")?;
    if body.contains(&0) {
        return None;
    }
    core::str::from_utf8(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            ty: 2,
            req_id: 0xdead_beef,
            tx_id: 7,
            len: 12,
        };
        let b = h.to_bytes();
        assert_eq!(&b[..4], &[2, 0, 0, 0]);
        assert_eq!(Header::parse(&b), Some(h));
        assert_eq!(Header::parse(&b[..15]), None);
    }

    #[test]
    fn types_and_errors() {
        for raw in 0..=u16::MAX as u32 {
            if let Some(t) = MsgType::from_raw(raw) {
                assert_eq!(t.raw(), raw);
            }
        }
        assert_eq!(MsgType::from_raw(20), None);
        assert_eq!(MsgType::from_raw(0xffff), None);
        assert_eq!(MsgType::ResetWatches.raw(), 21);
        for e in XsError::ALL {
            assert_eq!(XsError::from_name(e.name()), Some(e));
        }
        assert_eq!(XsError::TooBig.name(), "E2BIG");
    }

    #[test]
    fn arg_splitting() {
        assert_eq!(one_arg(b"a/b\0"), Some("a/b"));
        assert_eq!(one_arg(b"a/b"), None);
        assert_eq!(one_arg(b"a\0b\0"), None);
        assert_eq!(one_arg(b""), None);
        assert_eq!(strings(b"p\0t\0").unwrap(), ["p", "t"]);
        assert_eq!(strings(b"\0").unwrap(), [""]);
        assert_eq!(strings(b"p\0t"), None);
    }
}
