//! Node permissions (`docs/misc/xenstore.txt`, C xenstored's `perm_for_conn`): a non-empty
//! list of `<letter><domid>` entries. The first names the **owner**, who has full access,
//! and gives the access of every domain without an entry of its own; later entries grant
//! `r`ead, `w`rite, `b`oth or `n`one to one domain each. The privileged domain (dom0)
//! bypasses all checks; a domain with a target (`SET_TARGET`) also acts as that target.

use alloc::format;
use alloc::vec::Vec;
use xen_abi::DomId;

use crate::path::parse_domid;
use crate::wire::XsError;

/// What one permission entry grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// `n`: nothing.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: read and write.
    Both,
}

impl Access {
    /// The wire letter.
    pub const fn letter(self) -> char {
        match self {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        }
    }

    fn from_letter(c: u8) -> Option<Access> {
        Some(match c {
            b'n' => Access::None,
            b'r' => Access::Read,
            b'w' => Access::Write,
            b'b' => Access::Both,
            _ => return None,
        })
    }

    fn rights(self) -> Rights {
        match self {
            Access::None => Rights::NONE,
            Access::Read => Rights::READ,
            Access::Write => Rights::WRITE,
            Access::Both => Rights(Rights::READ.0 | Rights::WRITE.0),
        }
    }
}

/// One entry of a permission list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The domain the entry names.
    pub dom: DomId,
    /// What it grants.
    pub access: Access,
}

impl Perm {
    /// An entry.
    pub const fn new(dom: DomId, access: Access) -> Perm {
        Perm { dom, access }
    }
}

/// A node's permission list; never empty.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Perms(Vec<Perm>);

/// The rights a caller has on a node (C's `XS_PERM_READ/WRITE/OWNER` bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rights(u8);

impl Rights {
    /// No access.
    pub const NONE: Rights = Rights(0);
    /// May read.
    pub const READ: Rights = Rights(1);
    /// May write.
    pub const WRITE: Rights = Rights(2);
    /// Owns the node (may change its permissions).
    pub const OWNER: Rights = Rights(4);
    /// Everything.
    pub const ALL: Rights = Rights(7);

    /// Whether every right in `need` is present.
    pub const fn has(self, need: Rights) -> bool {
        self.0 & need.0 == need.0
    }
    /// Whether any right in `need` is present (C's `parent_perm & perm`).
    pub const fn any(self, need: Rights) -> bool {
        self.0 & need.0 != 0
    }
    /// Union.
    pub const fn with(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }
}

/// Who is asking: the domain, whether it is privileged, and its `SET_TARGET` target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Who {
    /// The caller's domain.
    pub dom: DomId,
    /// Privileged (dom0): bypasses permission checks and quotas.
    pub privileged: bool,
    /// The domain this one acts for (`SET_TARGET`), if any.
    pub target: Option<DomId>,
}

impl Who {
    fn matches(&self, d: DomId) -> bool {
        d == self.dom || self.target == Some(d)
    }
}

impl Perms {
    /// A list with just the owner entry.
    pub fn owned_by(owner: DomId, others: Access) -> Perms {
        Perms(alloc::vec![Perm::new(owner, others)])
    }

    /// A list from entries; `None` if empty.
    pub fn from_entries(entries: Vec<Perm>) -> Option<Perms> {
        (!entries.is_empty()).then_some(Perms(entries))
    }

    /// The entries (owner first).
    pub fn entries(&self) -> &[Perm] {
        &self.0
    }

    /// The owner.
    pub fn owner(&self) -> DomId {
        self.0.first().map_or(DomId::new(0), |p| p.dom)
    }

    /// Replace the owner (keeping what it grants to others).
    pub fn set_owner(&mut self, owner: DomId) {
        if let Some(p) = self.0.first_mut() {
            p.dom = owner;
        }
    }

    /// Drop every non-owner entry naming `dom`; whether anything changed.
    pub fn forget(&mut self, dom: DomId) -> bool {
        let before = self.0.len();
        let mut first = true;
        self.0
            .retain(|p| core::mem::take(&mut first) || p.dom != dom);
        self.0.len() != before
    }

    /// The rights of `who` (C xenstored's `perm_for_conn`).
    pub fn rights(&self, who: &Who) -> Rights {
        if who.privileged || self.0.first().is_some_and(|p| who.matches(p.dom)) {
            return Rights::ALL;
        }
        if let Some(p) = self.0.iter().skip(1).find(|p| who.matches(p.dom)) {
            return p.access.rights();
        }
        self.0.first().map_or(Rights::NONE, |p| p.access.rights())
    }

    /// Parse `SET_PERMS` entries (`b5`, `n0`, ...).
    pub fn parse<'a>(strings: impl IntoIterator<Item = &'a str>) -> Result<Perms, XsError> {
        let mut v = Vec::new();
        for s in strings {
            let (&letter, id) = s.as_bytes().split_first().ok_or(XsError::Inval)?;
            let access = Access::from_letter(letter).ok_or(XsError::Inval)?;
            let dom = parse_domid(core::str::from_utf8(id).map_err(|_| XsError::Inval)?)?;
            v.push(Perm::new(dom, access));
        }
        Perms::from_entries(v).ok_or(XsError::Inval)
    }

    /// `GET_PERMS` reply payload: each entry NUL-terminated.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.0 {
            out.extend_from_slice(format!("{}{}\0", p.access.letter(), p.dom.raw()).as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(d: u16) -> Who {
        Who {
            dom: DomId::new(d),
            privileged: d == 0,
            target: None,
        }
    }

    #[test]
    fn rights_follow_the_list() {
        let p = Perms::parse(["n5", "r6", "w7", "b8", "n9"]).unwrap();
        assert_eq!(p.owner(), DomId::new(5));
        assert!(p.rights(&who(5)).has(Rights::ALL));
        assert!(p.rights(&who(0)).has(Rights::ALL));
        assert_eq!(p.rights(&who(6)), Rights::READ);
        assert_eq!(p.rights(&who(7)), Rights::WRITE);
        assert!(p.rights(&who(8)).has(Rights::READ.with(Rights::WRITE)));
        assert!(!p.rights(&who(8)).has(Rights::OWNER));
        assert_eq!(p.rights(&who(9)), Rights::NONE);
        assert_eq!(p.rights(&who(10)), Rights::NONE);
        let q = Perms::parse(["r5"]).unwrap();
        assert_eq!(q.rights(&who(10)), Rights::READ);
        let t = Who {
            dom: DomId::new(20),
            privileged: false,
            target: Some(DomId::new(5)),
        };
        assert!(p.rights(&t).has(Rights::OWNER));
        assert_eq!(&p.to_wire()[..9], b"n5\0r6\0w7\0");
    }

    #[test]
    fn parse_errors_and_forget() {
        for bad in [&["x5"][..], &["r"], &["r-1"], &["r70000"], &[]] {
            assert_eq!(Perms::parse(bad.iter().copied()), Err(XsError::Inval));
        }
        let mut p = Perms::parse(["b3", "r3", "r4"]).unwrap();
        assert!(p.forget(DomId::new(3)));
        assert_eq!(p, Perms::parse(["b3", "r4"]).unwrap());
        assert!(!p.forget(DomId::new(9)));
    }
}
