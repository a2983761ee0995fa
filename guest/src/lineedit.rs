//! A minimal line editor for a serial console: printable ASCII is inserted and echoed,
//! Backspace/DEL erase one character, Ctrl-U erases the line, CR or LF ends it (CR LF counts
//! once), and ANSI escape sequences (arrow keys) are swallowed.

/// What the editor wants done after a byte.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Nothing to report (echo, if any, was written).
    None,
    /// A line was completed (without its terminator).
    Line(&'a str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Normal,
    AfterCr,
    Esc,
    Csi,
}

/// Line editor with a fixed capacity of `N` bytes.
pub struct LineEditor<const N: usize> {
    buf: [u8; N],
    len: usize,
    state: State,
    done: bool,
}

impl<const N: usize> Default for LineEditor<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LineEditor<N> {
    /// An empty editor.
    pub const fn new() -> Self {
        LineEditor {
            buf: [0; N],
            len: 0,
            state: State::Normal,
            done: false,
        }
    }

    /// The text typed so far.
    pub fn current(&self) -> &str {
        // Only printable ASCII is ever inserted.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// Feed one input byte; echo goes to `echo`.
    pub fn feed(&mut self, byte: u8, echo: &mut impl FnMut(&[u8])) -> Event<'_> {
        if self.done {
            // The previous call returned a line: start a new one.
            self.len = 0;
            self.done = false;
        }
        let state = self.state;
        self.state = State::Normal;
        match (state, byte) {
            (State::Esc, b'[') | (State::Esc, b'O') => {
                self.state = State::Csi;
                Event::None
            }
            (State::Esc, _) => Event::None,
            (State::Csi, 0x40..=0x7e) => Event::None,
            (State::Csi, _) => {
                self.state = State::Csi;
                Event::None
            }
            (State::AfterCr, b'\n') => Event::None,
            (_, b'\r') | (_, b'\n') => {
                if byte == b'\r' {
                    self.state = State::AfterCr;
                }
                echo(b"\n");
                self.done = true;
                Event::Line(self.current())
            }
            (_, 0x08) | (_, 0x7f) => {
                if self.len > 0 {
                    self.len -= 1;
                    echo(b"\x08 \x08");
                }
                Event::None
            }
            (_, 0x15) => {
                for _ in 0..self.len {
                    echo(b"\x08 \x08");
                }
                self.len = 0;
                Event::None
            }
            (_, 0x1b) => {
                self.state = State::Esc;
                Event::None
            }
            (_, 0x20..=0x7e) => {
                if self.len < N {
                    self.buf[self.len] = byte;
                    self.len += 1;
                    echo(&[byte]);
                }
                Event::None
            }
            _ => Event::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> (Vec<String>, Vec<u8>) {
        let mut ed = LineEditor::<16>::new();
        let mut lines = Vec::new();
        let mut out = Vec::new();
        for &b in input {
            if let Event::Line(l) = ed.feed(b, &mut |e: &[u8]| out.extend_from_slice(e)) {
                lines.push(l.to_string());
            }
        }
        (lines, out)
    }

    #[test]
    fn basic_lines() {
        let (l, out) = run(b"info\nhelp\r\n\r");
        assert_eq!(l, vec!["info", "help", ""]);
        assert_eq!(out, b"info\nhelp\n\n");
    }

    #[test]
    fn backspace_and_del() {
        let (l, out) = run(b"inx\x08fo\x7f\x7fo\n");
        assert_eq!(l, vec!["ino"]);
        assert_eq!(out, b"inx\x08 \x08fo\x08 \x08\x08 \x08o\n");
        // Backspace on an empty line echoes nothing.
        let (l, out) = run(b"\x08\x7fa\n");
        assert_eq!(l, vec!["a"]);
        assert_eq!(out, b"a\n");
    }

    #[test]
    fn ctrl_u_and_escapes() {
        let (l, _) = run(b"garbage\x15dmesg\x1b[A\x1bOB\n");
        assert_eq!(l, vec!["dmesg"]);
    }

    #[test]
    fn overflow_and_control_chars() {
        let (l, _) = run(b"0123456789abcdefXYZ\x01\t\n");
        assert_eq!(l, vec!["0123456789abcdef"]);
    }
}
