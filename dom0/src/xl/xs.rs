//! The toolstack's [`Store`] over rxen's xenstored (`backends/xenstored`), called
//! in-process as dom0 (privileged: no permission checks, no quotas), as libxl talks to
//! xenstored through libxenstore.

use alloc::string::String;
use alloc::vec::Vec;

use xen_abi::{DomId, Errno};
use xenstored::{XsError, DOM0};

use super::platform::{Access, Perm, Store};
use crate::HostError;

fn err(e: XsError) -> HostError {
    let errno = match e {
        XsError::Inval => Errno::EINVAL,
        XsError::Acces => Errno::EACCES,
        XsError::Exist => Errno::EEXIST,
        XsError::IsDir => Errno::EISDIR,
        XsError::NoEnt => Errno::ENOENT,
        XsError::NoMem => Errno::ENOMEM,
        XsError::NoSpc => Errno::ENOSPC,
        XsError::Io => Errno::EIO,
        XsError::NotEmpty => Errno::ENOTEMPTY,
        XsError::NoSys => Errno::ENOSYS,
        XsError::RoFs => Errno::EROFS,
        XsError::Busy => Errno::EBUSY,
        XsError::Again => Errno::EAGAIN,
        XsError::IsConn => Errno::EISCONN,
        XsError::TooBig => Errno::E2BIG,
        XsError::Perm => Errno::EPERM,
    };
    HostError(errno.to_ret())
}

fn access(a: Access) -> xenstored::Access {
    match a {
        Access::None => xenstored::Access::None,
        Access::Read => xenstored::Access::Read,
        Access::Write => xenstored::Access::Write,
        Access::Both => xenstored::Access::Both,
    }
}

impl Store for xenstored::Store {
    fn write(&mut self, path: &str, value: &str) -> Result<(), HostError> {
        xenstored::Store::write(self, DOM0, path, value.as_bytes()).map_err(err)
    }
    fn read(&mut self, path: &str) -> Result<Option<String>, HostError> {
        match self.read_string(DOM0, path) {
            Ok(s) => Ok(Some(s)),
            Err(XsError::NoEnt) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }
    fn mkdir(&mut self, path: &str) -> Result<(), HostError> {
        xenstored::Store::mkdir(self, DOM0, path).map_err(err)
    }
    fn rm(&mut self, path: &str) -> Result<(), HostError> {
        match xenstored::Store::rm(self, DOM0, path) {
            Ok(()) | Err(XsError::NoEnt) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }
    fn set_perms(&mut self, path: &str, perms: &[Perm]) -> Result<(), HostError> {
        let entries: Vec<xenstored::Perm> = perms
            .iter()
            .map(|p| xenstored::Perm::new(DomId::new(p.domid), access(p.access)))
            .collect();
        let perms = xenstored::Perms::from_entries(entries).ok_or(err(XsError::Inval))?;
        xenstored::Store::set_perms(self, DOM0, path, &perms).map_err(err)
    }
    fn introduce(&mut self, domid: u16, store_mfn: u64, store_port: u32) -> Result<(), HostError> {
        xenstored::Store::introduce(self, DomId::new(domid), store_mfn, store_port).map_err(err)
    }
    fn release(&mut self, domid: u16) -> Result<(), HostError> {
        xenstored::Store::release(self, DomId::new(domid)).map_err(err)
    }
}

/// A [`Store`] handle on a xenstored shared with the rest of dom0 (the ring service).
pub struct Shared(pub &'static spin::Mutex<xenstored::Store>);

impl Store for Shared {
    fn write(&mut self, path: &str, value: &str) -> Result<(), HostError> {
        Store::write(&mut *self.0.lock(), path, value)
    }
    fn read(&mut self, path: &str) -> Result<Option<String>, HostError> {
        Store::read(&mut *self.0.lock(), path)
    }
    fn mkdir(&mut self, path: &str) -> Result<(), HostError> {
        Store::mkdir(&mut *self.0.lock(), path)
    }
    fn rm(&mut self, path: &str) -> Result<(), HostError> {
        Store::rm(&mut *self.0.lock(), path)
    }
    fn set_perms(&mut self, path: &str, perms: &[Perm]) -> Result<(), HostError> {
        Store::set_perms(&mut *self.0.lock(), path, perms)
    }
    fn introduce(&mut self, domid: u16, store_mfn: u64, store_port: u32) -> Result<(), HostError> {
        Store::introduce(&mut *self.0.lock(), domid, store_mfn, store_port)
    }
    fn release(&mut self, domid: u16) -> Result<(), HostError> {
        Store::release(&mut *self.0.lock(), domid)
    }
}
