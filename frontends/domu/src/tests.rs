//! Host tests: command line, shutdown protocol and identity against a tiny xenstored.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use pv_guest::shared_page::{Consumer, Producer, SharedPage, StreamLayout};
use pv_guest::xenbus::{self as xs, msg, Header};

use super::*;

const HOME: &str = "/local/domain/3";

/// Answers READ/WRITE/WATCH/TRANSACTION_* on the server end of the page.
struct Store {
    req: Consumer,
    rsp: Producer,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    nodes: BTreeMap<String, String>,
    /// Commits to refuse with EAGAIN (a conflicting writer).
    conflicts: u32,
    /// Paths whose writes are refused with EACCES.
    read_only: Vec<String>,
    /// Committed writes, in order.
    log: Vec<(String, String)>,
    /// Writes of the open transaction.
    pending: Vec<(String, String)>,
}

impl Store {
    fn answer(&mut self, h: Header, ty: u32, p: &[u8]) {
        let mut m = Header {
            ty,
            req_id: h.req_id,
            tx_id: h.tx_id,
            len: p.len() as u32,
        }
        .encode()
        .to_vec();
        m.extend_from_slice(p);
        self.out.extend(m);
    }

    fn handle(&mut self, h: Header, p: &[u8]) {
        let nul = p.iter().position(|&b| b == 0).unwrap_or(p.len());
        let arg = String::from_utf8_lossy(&p[..nul]).into_owned();
        let path = if arg.starts_with('/') {
            arg.clone()
        } else {
            format!("{HOME}/{arg}")
        };
        match h.ty {
            msg::READ => match self.nodes.get(&path) {
                Some(v) => {
                    let v = v.clone().into_bytes();
                    self.answer(h, msg::READ, &v)
                }
                None => self.answer(h, msg::ERROR, b"ENOENT\0"),
            },
            msg::WRITE => {
                if self.read_only.contains(&path) {
                    return self.answer(h, msg::ERROR, b"EACCES\0");
                }
                let v = String::from_utf8_lossy(&p[nul + 1..]).into_owned();
                if h.tx_id == 0 {
                    self.nodes.insert(path.clone(), v.clone());
                    self.log.push((path, v));
                } else {
                    self.pending.push((path, v));
                }
                self.answer(h, msg::WRITE, b"OK\0")
            }
            msg::WATCH => self.answer(h, msg::WATCH, b"OK\0"),
            msg::SET_PERMS => {
                if !self.nodes.contains_key(&path) {
                    return self.answer(h, msg::ERROR, b"ENOENT\0");
                }
                let perms = p[nul + 1..]
                    .split(|&b| b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<Vec<_>>()
                    .join(",");
                self.log.push((format!("perms {path}"), perms));
                self.answer(h, msg::SET_PERMS, b"OK\0")
            }
            msg::TRANSACTION_START => {
                self.pending.clear();
                self.answer(h, msg::TRANSACTION_START, b"5\0")
            }
            msg::TRANSACTION_END => {
                if p.starts_with(b"T") && self.conflicts > 0 {
                    self.conflicts -= 1;
                    self.pending.clear();
                    return self.answer(h, msg::ERROR, b"EAGAIN\0");
                }
                if p.starts_with(b"T") {
                    for (k, v) in std::mem::take(&mut self.pending) {
                        self.nodes.insert(k.clone(), v.clone());
                        self.log.push((k, v));
                    }
                }
                self.pending.clear();
                self.answer(h, msg::TRANSACTION_END, b"OK\0")
            }
            _ => self.answer(h, msg::ERROR, b"ENOSYS\0"),
        }
    }

    fn step(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        let mut progress = false;
        while let Ok(n @ 1..) = self.req.read(&mut buf) {
            self.inbuf.extend_from_slice(&buf[..n]);
            progress = true;
        }
        while self.inbuf.len() >= xs::HEADER_LEN {
            let mut hb = [0u8; xs::HEADER_LEN];
            hb.copy_from_slice(&self.inbuf[..xs::HEADER_LEN]);
            let h = Header::decode(&hb);
            let total = xs::HEADER_LEN + h.len as usize;
            if self.inbuf.len() < total {
                break;
            }
            let p = self.inbuf[xs::HEADER_LEN..total].to_vec();
            self.inbuf.drain(..total);
            self.handle(h, &p);
        }
        if let Ok(n @ 1..) = self.rsp.write(&self.out) {
            self.out.drain(..n);
            progress = true;
        }
        progress
    }
}

#[derive(Clone)]
struct T(Rc<RefCell<Store>>);

impl XsTransport for T {
    fn notify(&mut self) -> Result<(), XsError> {
        Ok(())
    }
    fn wait(&mut self) -> Result<(), XsError> {
        if self.0.borrow_mut().step() {
            Ok(())
        } else {
            Err(XsError::Timeout)
        }
    }
}

fn setup(nodes: &[(&str, &str)]) -> (Xenbus<T>, T) {
    let page = SharedPage::leak_host_page();
    let layout = |data, cons, prod| StreamLayout {
        data,
        size: xs::RING_SIZE,
        cons,
        prod,
    };
    let store = Store {
        req: Consumer::new(page, layout(xs::REQ_OFFSET, xs::REQ_CONS, xs::REQ_PROD)),
        rsp: Producer::new(page, layout(xs::RSP_OFFSET, xs::RSP_CONS, xs::RSP_PROD)),
        inbuf: Vec::new(),
        out: Vec::new(),
        nodes: nodes
            .iter()
            .map(|(k, v)| (format!("{HOME}/{k}"), v.to_string()))
            .collect(),
        conflicts: 0,
        read_only: Vec::new(),
        log: Vec::new(),
        pending: Vec::new(),
    };
    let t = T(Rc::new(RefCell::new(store)));
    (Xenbus::new(page, t.clone()), t)
}

#[test]
fn command_line() {
    assert_eq!(Config::parse(""), Config::default());
    assert!(Config::parse("crash").crash);
    assert!(Config::parse("console=hvc0 crash=1").crash);
    assert!(!Config::parse("crash=0").crash);
    let c = Config::parse("crash_after=5 console_io");
    assert_eq!(
        c,
        Config {
            crash: false,
            crash_after: Some(5),
            console_io: true,
            ..Config::default()
        }
    );
    let c = Config::parse("evtchn_server evtchn_count=7");
    assert!(c.evtchn_server);
    assert_eq!((c.evtchn_client, c.evtchn_count), (None, Some(7)));
    let c = Config::parse("evtchn_client=3 isolation=1");
    assert!(!c.evtchn_server);
    assert_eq!((c.evtchn_client, c.isolation), (Some(3), Some(1)));
    assert_eq!(Config::parse("evtchn_client=x").evtchn_client, None);
    assert_eq!(Config::parse("crash_after=x").crash_after, None);
    assert!(!Config::parse("nocrash xcrash=1").crash);
}

#[test]
fn shutdown_words() {
    assert_eq!(
        ShutdownAction::parse("poweroff"),
        Some(ShutdownAction::Poweroff)
    );
    assert_eq!(ShutdownAction::parse("halt"), Some(ShutdownAction::Halt));
    assert_eq!(
        ShutdownAction::parse("reboot"),
        Some(ShutdownAction::Reboot)
    );
    assert_eq!(ShutdownAction::parse("suspend"), None);
    assert_eq!(ShutdownAction::parse(""), None);
    assert_eq!(ShutdownAction::Halt.name(), "halt");
}

#[test]
fn identity_from_relative_paths() {
    let (mut xb, _) = setup(&[("domid", "3"), ("name", "demo")]);
    let id = read_identity(&mut xb).unwrap();
    assert_eq!(id.domid, 3);
    assert_eq!(id.name.as_str(), "demo");
    let (mut xb, _) = setup(&[("name", "demo")]);
    assert_eq!(
        read_identity(&mut xb),
        Err(XsError::Server(XsErrno::ENOENT))
    );
}

#[test]
fn request_is_cleared_then_obeyed() {
    let (mut xb, t) = setup(&[("control/shutdown", "poweroff")]);
    assert_eq!(
        take_shutdown_request(&mut xb),
        Ok(Request::Act(ShutdownAction::Poweroff))
    );
    let s = t.0.borrow();
    assert_eq!(s.nodes[&format!("{HOME}/control/shutdown")], "");
    assert_eq!(s.log, [(format!("{HOME}/control/shutdown"), String::new())]);
}

#[test]
fn conflicting_commits_are_retried() {
    let (mut xb, t) = setup(&[("control/shutdown", "reboot")]);
    t.0.borrow_mut().conflicts = 3;
    assert_eq!(
        take_shutdown_request(&mut xb),
        Ok(Request::Act(ShutdownAction::Reboot))
    );
    t.0.borrow_mut()
        .nodes
        .insert(format!("{HOME}/control/shutdown"), "halt".into());
    t.0.borrow_mut().conflicts = MAX_TX_RETRIES as u32;
    assert_eq!(
        take_shutdown_request(&mut xb),
        Err(XsError::Server(XsErrno::EAGAIN))
    );
}

#[test]
fn nothing_or_unsupported_requests() {
    let (mut xb, t) = setup(&[]);
    assert_eq!(take_shutdown_request(&mut xb), Ok(Request::None));
    t.0.borrow_mut()
        .nodes
        .insert(format!("{HOME}/control/shutdown"), String::new());
    assert_eq!(take_shutdown_request(&mut xb), Ok(Request::None));
    t.0.borrow_mut()
        .nodes
        .insert(format!("{HOME}/control/shutdown"), "suspend".into());
    match take_shutdown_request(&mut xb) {
        Ok(Request::Ignored(w)) => assert_eq!(w.as_str(), "suspend"),
        r => panic!("{r:?}"),
    }
    // Left in place for someone who can act on it.
    assert_eq!(
        t.0.borrow().nodes[&format!("{HOME}/control/shutdown")],
        "suspend"
    );
    assert!(t.0.borrow().log.is_empty());
}

#[test]
fn watch_tolerates_read_only_feature_nodes() {
    let (mut xb, t) = setup(&[]);
    t.0.borrow_mut().read_only = vec![format!("{HOME}/control/feature-reboot")];
    watch_shutdown(&mut xb).unwrap();
    let s = t.0.borrow();
    assert_eq!(
        s.log,
        [(format!("{HOME}/control/feature-poweroff"), "1".into())]
    );
}

#[test]
fn text_truncates_at_char_boundaries() {
    assert_eq!(Text::<4>::new("abcdef").as_str(), "abcd");
    assert_eq!(Text::<4>::new("abcé").as_str(), "abc");
    assert_eq!(format!("{}", Text::<8>::new("dom")), "dom");
}

#[test]
fn evtchn_rendezvous_server_side() {
    let (mut xb, t) = setup(&[]);
    evtchn::open_rendezvous(&mut xb, 3).unwrap();
    // Nobody asked yet.
    assert_eq!(evtchn::client_domid(&mut xb).unwrap(), None);
    t.0.borrow_mut()
        .nodes
        .insert(format!("{HOME}/data/evtchn/client"), "4".into());
    assert_eq!(evtchn::client_domid(&mut xb).unwrap(), Some(4));
    evtchn::publish_port(&mut xb, 3, 4, 9).unwrap();
    let log = t.0.borrow().log.clone();
    assert_eq!(
        log,
        [
            (format!("{HOME}/data/evtchn/client"), String::new()),
            (format!("perms {HOME}/data/evtchn/client"), "w3".into()),
            (format!("{HOME}/data/evtchn/port"), "9".into()),
            (format!("perms {HOME}/data/evtchn/port"), "n3,r4".into()),
        ]
    );
}

#[test]
fn evtchn_rendezvous_client_side_and_isolation_paths() {
    let (mut xb, t) = setup(&[]);
    assert_eq!(
        evtchn::server_port(&mut xb, 1),
        Err(XsError::Server(XsErrno::ENOENT))
    );
    evtchn::offer(&mut xb, 1, 3).unwrap();
    t.0.borrow_mut()
        .nodes
        .insert("/local/domain/1/data/evtchn/port".into(), "12".into());
    assert_eq!(evtchn::server_port(&mut xb, 1), Ok(12));
    t.0.borrow_mut()
        .read_only
        .push("/local/domain/1/name".into());
    assert_eq!(outcome(isolation::write_name(&mut xb, 1)), "EACCES");
    assert_eq!(outcome(isolation::read_name(&mut xb, 1)), "ENOENT");
    let log = t.0.borrow().log.clone();
    assert_eq!(
        log[0],
        ("/local/domain/1/data/evtchn/client".into(), "3".into())
    );
}
