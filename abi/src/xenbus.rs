//! `enum xenbus_state` (`xen/include/public/io/xenbus.h`): the `state` node each end of a
//! split device keeps in xenstore, through which frontend, backend and toolstack take a
//! device from creation to connection and back.

/// A split device end's state, as its `state` node holds it (a decimal number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum XenbusState {
    /// 0: no state node or an unreadable one.
    Unknown = 0,
    /// 1: created by the toolstack, no driver attached yet.
    Initialising = 1,
    /// 2: waiting for the peer's details (a backend has written its features).
    InitWait = 2,
    /// 3: details written (a frontend has published its ring and event channel).
    Initialised = 3,
    /// 4: connected.
    Connected = 4,
    /// 5: shutting down.
    Closing = 5,
    /// 6: closed.
    Closed = 6,
    /// 7: reconfiguring (not used by blkif or netif).
    Reconfiguring = 7,
    /// 8: reconfigured (not used by blkif or netif).
    Reconfigured = 8,
}

impl XenbusState {
    /// Every state, by number.
    const ALL: [XenbusState; 9] = [
        XenbusState::Unknown,
        XenbusState::Initialising,
        XenbusState::InitWait,
        XenbusState::Initialised,
        XenbusState::Connected,
        XenbusState::Closing,
        XenbusState::Closed,
        XenbusState::Reconfiguring,
        XenbusState::Reconfigured,
    ];

    /// The state a node's text names; `None` for anything but `0`..=`8`.
    pub fn parse(s: &str) -> Option<XenbusState> {
        let n: usize = s.trim().parse().ok()?;
        Self::ALL.get(n).copied()
    }

    /// The text written to a `state` node.
    pub fn as_str(self) -> &'static str {
        ["0", "1", "2", "3", "4", "5", "6", "7", "8"][self as usize]
    }

    /// `xenbus_strstate`'s name.
    pub fn name(self) -> &'static str {
        [
            "Unknown",
            "Initialising",
            "InitWait",
            "Initialised",
            "Connected",
            "Closing",
            "Closed",
            "Reconfiguring",
            "Reconfigured",
        ][self as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_text_round_trips() {
        for s in XenbusState::ALL {
            assert_eq!(XenbusState::parse(s.as_str()), Some(s));
            assert_eq!(s.as_str().parse::<u8>(), Ok(s as u8));
        }
        assert_eq!(XenbusState::parse(" 4\n"), Some(XenbusState::Connected));
        assert_eq!(XenbusState::parse("9"), None);
        assert_eq!(XenbusState::parse("-1"), None);
        assert_eq!(XenbusState::parse("Connected"), None);
        assert_eq!(XenbusState::Closing.name(), "Closing");
    }
}
