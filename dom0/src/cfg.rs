//! xl.cfg, the domain configuration file format of Xen's `xl` (`docs/man/xl.cfg.5.pod`,
//! parsed in Xen by libxlu's `libxlu_cfg_y.y` / `libxlu_cfg_l.l` and interpreted by
//! `xl_parse.c`).
//!
//! Syntax: one `key = value` setting per line (or separated by `;`); a value is a number,
//! a string in double or single quotes, or a list `[ v, v, ... ]` of those, which may span
//! lines and may end with a trailing comma; `#` starts a comment. As in libxlu every atom
//! is kept as text, so `memory = "16"` and `memory = 16` mean the same.
//!
//! [`DomainConfig::parse`] reads the settings a PV domain uses: name, kernel, ramdisk,
//! cmdline (or root + extra, combined as xl does), memory, maxmem, vcpus, the
//! on_poweroff/on_reboot/on_crash actions, and `disk`/`vif` lists (kept for later). An
//! error names the line and the problem.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// One value of a setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A number or a string (libxlu keeps both as text).
    Atom(String),
    /// `[ ... ]`.
    List(Vec<String>),
}

/// One `key = value` setting and the line it starts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: Value,
    pub line: usize,
}

/// A configuration error: the line (1-based) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CfgError {
    pub line: usize,
    pub problem: String,
}

impl fmt::Display for CfgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

fn err(line: usize, problem: impl Into<String>) -> CfgError {
    CfgError {
        line,
        problem: problem.into(),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Atom(String),
    Eq,
    Open,
    Close,
    Comma,
    /// End of a statement: a newline or `;`.
    End,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => alloc::format!("`{s}'"),
        Tok::Atom(s) => alloc::format!("value `{s}'"),
        Tok::Eq => "`='".to_string(),
        Tok::Open => "`['".to_string(),
        Tok::Close => "`]'".to_string(),
        Tok::Comma => "`,'".to_string(),
        Tok::End => "end of line".to_string(),
    }
}

fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, CfgError> {
    let mut toks = Vec::new();
    let mut line = 1usize;
    let mut chars = text.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            '\n' => {
                toks.push((Tok::End, line));
                line += 1;
            }
            ';' => toks.push((Tok::End, line)),
            c if c.is_whitespace() => {}
            '#' => {
                while chars.peek().is_some_and(|&(_, c)| c != '\n') {
                    chars.next();
                }
            }
            '=' => toks.push((Tok::Eq, line)),
            '[' => toks.push((Tok::Open, line)),
            ']' => toks.push((Tok::Close, line)),
            ',' => toks.push((Tok::Comma, line)),
            '"' | '\'' => {
                let quote = c;
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None | Some((_, '\n')) => {
                            return Err(err(line, "unterminated string"));
                        }
                        Some((_, ch)) if ch == quote => break,
                        // libxlu understands C-style escapes inside double quotes.
                        Some((_, '\\')) if quote == '"' => match chars.next() {
                            Some((_, 'n')) => s.push('\n'),
                            Some((_, 't')) => s.push('\t'),
                            Some((_, ch)) if ch != '\n' => s.push(ch),
                            _ => return Err(err(line, "unterminated string")),
                        },
                        Some((_, ch)) => s.push(ch),
                    }
                }
                toks.push((Tok::Atom(s), line));
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' => {
                let mut s = String::new();
                s.push(c);
                while let Some(&(_, n)) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' || n == '-' || n == '.' {
                        s.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if s.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
                    toks.push((Tok::Atom(s), line));
                } else {
                    toks.push((Tok::Ident(s), line));
                }
            }
            other => {
                return Err(err(line, alloc::format!("unexpected character `{other}'")));
            }
        }
    }
    Ok(toks)
}

/// Parses the settings of an xl.cfg file. A key given twice keeps its last value (as
/// libxlu does); each setting remembers its line.
pub fn parse_settings(text: &str) -> Result<Vec<Setting>, CfgError> {
    let toks = tokenize(text)?;
    let last_line = toks.last().map_or(1, |t| t.1);
    let mut out: Vec<Setting> = Vec::new();
    let mut i = 0;
    let peek = |i: usize| toks.get(i).map(|t| &t.0);
    let line_at = |i: usize| toks.get(i).map_or(last_line, |t| t.1);
    while i < toks.len() {
        let (tok, line) = (&toks[i].0, toks[i].1);
        let key = match tok {
            Tok::End => {
                i += 1;
                continue;
            }
            Tok::Ident(k) => k.clone(),
            other => {
                return Err(err(
                    line,
                    alloc::format!("expected a setting name, found {}", describe(other)),
                ))
            }
        };
        i += 1;
        match peek(i) {
            Some(Tok::Eq) => i += 1,
            Some(t) => {
                return Err(err(
                    line_at(i),
                    alloc::format!("expected `=' after `{key}', found {}", describe(t)),
                ))
            }
            None => return Err(err(line, alloc::format!("expected `=' after `{key}'"))),
        }
        let value = match peek(i) {
            Some(Tok::Atom(s)) | Some(Tok::Ident(s)) => {
                i += 1;
                Value::Atom(s.clone())
            }
            Some(Tok::Open) => {
                let open_line = line_at(i);
                i += 1;
                let mut items = Vec::new();
                let mut want_item = true;
                loop {
                    match peek(i) {
                        Some(Tok::End) => i += 1,
                        Some(Tok::Close) => {
                            i += 1;
                            break;
                        }
                        Some(Tok::Atom(s)) | Some(Tok::Ident(s)) if want_item => {
                            items.push(s.clone());
                            want_item = false;
                            i += 1;
                        }
                        Some(Tok::Comma) if !want_item => {
                            want_item = true;
                            i += 1;
                        }
                        Some(t) => {
                            return Err(err(
                                line_at(i),
                                alloc::format!(
                                    "in the list of `{key}': unexpected {}",
                                    describe(t)
                                ),
                            ))
                        }
                        None => {
                            return Err(err(
                                open_line,
                                alloc::format!("the list of `{key}' is not closed with `]'"),
                            ))
                        }
                    }
                }
                Value::List(items)
            }
            Some(t) => {
                return Err(err(
                    line_at(i),
                    alloc::format!("expected a value for `{key}', found {}", describe(t)),
                ))
            }
            None => return Err(err(line, alloc::format!("missing value for `{key}'"))),
        };
        match peek(i) {
            None | Some(Tok::End) => {}
            Some(t) => {
                return Err(err(
                    line_at(i),
                    alloc::format!("unexpected {} after the value of `{key}'", describe(t)),
                ))
            }
        }
        out.retain(|s| s.key != key);
        out.push(Setting { key, value, line });
    }
    Ok(out)
}

/// What to do when a domain powers off, reboots or crashes (`on_poweroff`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Destroy the domain (also `coredump-destroy`: rxen writes no core dumps).
    Destroy,
    /// Destroy it and create it again from the same configuration (also
    /// `rename-restart`, `coredump-restart`, `soft-reset`).
    Restart,
    /// Leave it shut down, for inspection; `xl destroy` removes it.
    Preserve,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "destroy" | "coredump-destroy" => Action::Destroy,
            "restart" | "rename-restart" | "coredump-restart" | "soft-reset" => Action::Restart,
            "preserve" => Action::Preserve,
            _ => return None,
        })
    }

    /// xl's name of the action.
    pub fn name(self) -> &'static str {
        match self {
            Action::Destroy => "destroy",
            Action::Restart => "restart",
            Action::Preserve => "preserve",
        }
    }
}

/// The settings of a PV domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainConfig {
    pub name: String,
    pub kernel: String,
    pub ramdisk: Option<String>,
    /// The kernel command line (cmdline, or root= and extra combined).
    pub cmdline: String,
    /// Initial memory, MiB.
    pub memory_mib: u64,
    /// Maximum memory, MiB (>= memory).
    pub maxmem_mib: u64,
    pub vcpus: u32,
    pub on_poweroff: Action,
    pub on_reboot: Action,
    pub on_crash: Action,
    /// `disk = [...]`: the domain's virtual block devices.
    pub disks: Vec<crate::xl::disk::DiskSpec>,
    /// `vif = [...]` specifications (parsed, not used yet).
    pub vifs: Vec<String>,
    /// `uuid`, if given.
    pub uuid: Option<String>,
    /// Warnings for the user (ignored settings), as xl prints them.
    pub warnings: Vec<String>,
}

/// libxl's default memory for a domain without `memory` (MiB).
pub const DEFAULT_MEMORY_MIB: u64 = 32;
/// Upper bound rxen accepts for vcpus (the hypervisor's limit).
pub const MAX_VCPUS: u32 = 32;
/// Upper bound for memory settings (MiB): 1 TiB keeps page counts far from overflow.
pub const MAX_MEMORY_MIB: u64 = 1 << 20;

fn atom(s: &Setting) -> Result<&str, CfgError> {
    match &s.value {
        Value::Atom(a) => Ok(a),
        Value::List(_) => Err(err(
            s.line,
            alloc::format!("`{}' must be a single value, not a list", s.key),
        )),
    }
}

fn number(s: &Setting, min: u64, max: u64) -> Result<u64, CfgError> {
    let a = atom(s)?;
    let v = if let Some(hex) = a.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).ok()
    } else {
        a.parse::<u64>().ok()
    };
    match v {
        Some(v) if v >= min && v <= max => Ok(v),
        Some(_) => Err(err(
            s.line,
            alloc::format!("`{}' = {a} is out of range ({min}..={max})", s.key),
        )),
        None => Err(err(
            s.line,
            alloc::format!("`{}' must be a number, not `{a}'", s.key),
        )),
    }
}

fn list(s: &Setting) -> Vec<String> {
    match &s.value {
        Value::Atom(a) => alloc::vec![a.clone()],
        Value::List(l) => l.clone(),
    }
}

impl DomainConfig {
    /// Parses an xl.cfg text into a PV domain configuration.
    pub fn parse(text: &str) -> Result<DomainConfig, CfgError> {
        let settings = parse_settings(text)?;
        let get = |k: &str| settings.iter().find(|s| s.key == k);
        let string = |k: &str| -> Result<Option<String>, CfgError> {
            get(k).map(|s| atom(s).map(String::from)).transpose()
        };
        let name = string("name")?
            .ok_or_else(|| err(1, "domain name must be specified (name = \"...\")"))?;
        if let Some(s) = get("name") {
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(err(
                    s.line,
                    alloc::format!(
                        "invalid domain name `{name}' (letters, digits, - _ . ; up to 64)"
                    ),
                ));
            }
            if name == "Domain-0" {
                return Err(err(s.line, "the name Domain-0 is reserved for dom0"));
            }
        }
        let kernel = string("kernel")?
            .ok_or_else(|| err(1, "a PV domain needs a kernel (kernel = \"...\")"))?;
        if kernel.is_empty() {
            return Err(err(
                get("kernel").map_or(1, |s| s.line),
                "empty kernel path",
            ));
        }
        let ramdisk = string("ramdisk")?.filter(|r| !r.is_empty());
        let mut warnings = Vec::new();
        let root = string("root")?;
        let extra = string("extra")?;
        let cmdline = match string("cmdline")? {
            Some(c) => {
                if root.is_some() || extra.is_some() {
                    warnings.push(
                        "Warning: ignoring root= and extra= in favour of cmdline=".to_string(),
                    );
                }
                c
            }
            None => match (root, extra) {
                (Some(r), Some(e)) => alloc::format!("root={r} {e}"),
                (Some(r), None) => alloc::format!("root={r}"),
                (None, Some(e)) => e,
                (None, None) => String::new(),
            },
        };
        if cmdline.len() >= xen_abi::xen::MAX_GUEST_CMDLINE {
            let line = get("cmdline").or(get("extra")).map_or(1, |s| s.line);
            return Err(err(
                line,
                alloc::format!(
                    "the command line is {} bytes, longer than {}",
                    cmdline.len(),
                    xen_abi::xen::MAX_GUEST_CMDLINE - 1
                ),
            ));
        }
        let memory_mib = match get("memory") {
            Some(s) => number(s, 1, MAX_MEMORY_MIB)?,
            None => DEFAULT_MEMORY_MIB,
        };
        let maxmem_mib = match get("maxmem") {
            Some(s) => {
                let m = number(s, 1, MAX_MEMORY_MIB)?;
                if m < memory_mib {
                    return Err(err(
                        s.line,
                        alloc::format!("maxmem ({m}) is below memory ({memory_mib})"),
                    ));
                }
                m
            }
            None => memory_mib,
        };
        let vcpus = match get("vcpus") {
            Some(s) => number(s, 1, u64::from(MAX_VCPUS))? as u32,
            None => 1,
        };
        let action = |k: &str, default: Action| -> Result<Action, CfgError> {
            match get(k) {
                None => Ok(default),
                Some(s) => {
                    let a = atom(s)?;
                    Action::parse(a).ok_or_else(|| {
                        err(
                            s.line,
                            alloc::format!(
                                "unknown {k} action `{a}' (destroy, restart, rename-restart, preserve, coredump-destroy, coredump-restart, soft-reset)"
                            ),
                        )
                    })
                }
            }
        };
        let on_poweroff = action("on_poweroff", Action::Destroy)?;
        let on_reboot = action("on_reboot", Action::Restart)?;
        let on_crash = action("on_crash", Action::Destroy)?;
        let mut disks: Vec<crate::xl::disk::DiskSpec> = Vec::new();
        for (s, d) in get("disk")
            .into_iter()
            .flat_map(|s| list(s).into_iter().map(move |d| (s, d)))
        {
            if d.trim().is_empty() {
                return Err(err(s.line, "empty disk specification"));
            }
            let spec = crate::xl::disk::parse_disk(&d).map_err(|e| err(s.line, e))?;
            if let Some(other) = disks.iter().find(|o| o.devid == spec.devid) {
                return Err(err(
                    s.line,
                    alloc::format!("vdev `{}' is used twice (also `{}')", spec.vdev, other.vdev),
                ));
            }
            disks.push(spec);
        }
        let vifs = get("vif").map(list).unwrap_or_default();
        let uuid = string("uuid")?;
        if let (Some(u), Some(s)) = (&uuid, get("uuid")) {
            if parse_uuid(u).is_none() {
                return Err(err(s.line, alloc::format!("invalid uuid `{u}'")));
            }
        }
        let ty = string("type")?;
        if let (Some(t), Some(s)) = (&ty, get("type")) {
            if t != "pv" {
                return Err(err(
                    s.line,
                    alloc::format!("type `{t}' is not supported: rxen runs PV domains only"),
                ));
            }
        }
        Ok(DomainConfig {
            name,
            kernel,
            ramdisk,
            cmdline,
            memory_mib,
            maxmem_mib,
            vcpus,
            on_poweroff,
            on_reboot,
            on_crash,
            disks,
            vifs,
            uuid,
            warnings,
        })
    }
}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` into 16 bytes.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    if groups.len() != 5 || groups.iter().zip(lens).any(|(g, l)| g.len() != l) {
        return None;
    }
    let hex: String = groups.concat();
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Formats 16 bytes as a UUID string.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = fmt::Write::write_fmt(&mut s, format_args!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = r#"# the demo domain
name = "demo"
kernel = "/boot/domu"
memory = 16
vcpus = 1
on_crash = "destroy"
"#;

    #[test]
    fn demo_config() {
        let c = DomainConfig::parse(DEMO).unwrap();
        assert_eq!(c.name, "demo");
        assert_eq!(c.kernel, "/boot/domu");
        assert_eq!(c.memory_mib, 16);
        assert_eq!(c.maxmem_mib, 16);
        assert_eq!(c.vcpus, 1);
        assert_eq!(c.on_crash, Action::Destroy);
        assert_eq!(c.on_reboot, Action::Restart);
        assert_eq!(c.on_poweroff, Action::Destroy);
        assert_eq!(c.cmdline, "");
        assert!(c.ramdisk.is_none() && c.disks.is_empty() && c.vifs.is_empty());
    }

    #[test]
    fn full_syntax() {
        let text = "name='web-1'; kernel = \"/boot/vmlinuz\" # trailing comment\n\
            ramdisk = \"/boot/initrd.img\"\n\
            memory = \"256\"\nmaxmem=512\nvcpus = 2\n\
            root = \"/dev/xvda1 ro\"\nextra = \"console=hvc0\"\n\
            on_poweroff = 'preserve'\non_reboot = \"rename-restart\"\non_crash = \"coredump-destroy\"\n\
            disk = [ 'phy:/dev/vg/web,xvda,w',\n   'file:/srv/data.img,xvdb,r', ]\n\
            vif = [ 'mac=00:16:3e:00:00:01,bridge=xenbr0' ]\n\
            uuid = \"12345678-9abc-def0-1234-56789abcdef0\"\n\
            type = \"pv\"\nunknown_key = 3\n";
        let c = DomainConfig::parse(text).unwrap();
        assert_eq!(c.name, "web-1");
        assert_eq!(c.ramdisk.as_deref(), Some("/boot/initrd.img"));
        assert_eq!((c.memory_mib, c.maxmem_mib, c.vcpus), (256, 512, 2));
        assert_eq!(c.cmdline, "root=/dev/xvda1 ro console=hvc0");
        assert_eq!(c.on_poweroff, Action::Preserve);
        assert_eq!(c.on_reboot, Action::Restart);
        assert_eq!(c.on_crash, Action::Destroy);
        let disks: Vec<(&str, &str, &str)> = c
            .disks
            .iter()
            .map(|d| (d.backend_type.as_str(), d.target.as_str(), d.vdev.as_str()))
            .collect();
        assert_eq!(
            disks,
            [("phy", "vg/web", "xvda"), ("file", "/srv/data.img", "xvdb")]
        );
        assert_eq!(c.disks[1].mode, crate::xl::disk::DiskMode::ReadOnly);
        assert_eq!(c.vifs, ["mac=00:16:3e:00:00:01,bridge=xenbr0"]);
        assert_eq!(
            parse_uuid(c.uuid.as_deref().unwrap()).map(|u| format_uuid(&u)),
            c.uuid
        );
    }

    #[test]
    fn cmdline_combinations() {
        let base = "name=\"a\"\nkernel=\"k\"\n";
        let p = |s: &str| DomainConfig::parse(&(String::from(base) + s)).unwrap();
        assert_eq!(p("extra=\"quiet\"").cmdline, "quiet");
        assert_eq!(p("root=\"/dev/xvda\"").cmdline, "root=/dev/xvda");
        let c = p("cmdline=\"a b\"\nextra=\"ignored\"");
        assert_eq!(c.cmdline, "a b");
        assert_eq!(c.warnings.len(), 1);
    }

    #[test]
    fn last_setting_wins() {
        let c = DomainConfig::parse("name=\"a\"\nkernel=\"k\"\nmemory=8\nmemory=12\n").unwrap();
        assert_eq!(c.memory_mib, 12);
    }

    fn bad(text: &str) -> CfgError {
        DomainConfig::parse(text).unwrap_err()
    }

    #[test]
    fn errors_name_the_line() {
        let e = bad("name = \"x\"\nkernel = \"k\"\nmemory = lots\n");
        assert_eq!(e.line, 3);
        assert!(e.problem.contains("memory"), "{e}");
        let e = bad("name = \"x\"\nkernel \"k\"\n");
        assert_eq!(e.line, 2);
        assert!(e.problem.contains("expected `='"), "{e}");
        let e = bad("name = \"x\nkernel = \"k\"\n");
        assert_eq!((e.line, e.problem.as_str()), (1, "unterminated string"));
        let e = bad("name = \"x\"\nkernel = \"k\"\ndisk = [ 'a',\n 'b'\n");
        assert_eq!(e.line, 3);
        assert!(e.problem.contains("not closed"), "{e}");
        let e = bad("name = \"x\"\nkernel = \"k\"\ndisk = [ 'a' 'b' ]\n");
        assert_eq!(e.line, 3);
        let e =
            bad("name = \"x\"\nkernel = \"k\"\n\ndisk = [ 'phy:vda,xvda,w', 'phy:vdb,xvdz9,q' ]\n");
        assert_eq!(e.line, 4);
        assert!(e.problem.contains("invalid access `q'"), "{e}");
        let e = bad("name = \"x\"\nkernel = \"k\"\ndisk = [ 'phy:vda,xvda', 'phy:vdb,51712' ]\n");
        assert!(e.problem.contains("used twice"), "{e}");
        let e = bad("name = \"x\"\nkernel = \"k\"\non_crash = \"explode\"\n");
        assert_eq!(e.line, 3);
        assert!(e.problem.contains("explode"));
        let e = bad("name = \"x\"\nkernel = \"k\"\nmemory = 64\nmaxmem = 32\n");
        assert_eq!(e.line, 4);
        let e = bad("kernel = \"k\"\n");
        assert!(e.problem.contains("name"));
        let e = bad("name = \"x\"\n");
        assert!(e.problem.contains("kernel"));
        let e = bad("name = \"x\"\nkernel = \"k\"\nvcpus = 0\n");
        assert_eq!(e.line, 3);
        let e = bad("name = \"x\"\nkernel = [ \"k\" ]\n");
        assert_eq!(e.line, 2);
        let e = bad("name = \"x\" \"y\"\nkernel = \"k\"\n");
        assert_eq!(e.line, 1);
        let e = bad("name = \"x\"\nkernel = \"k\"\n@ = 1\n");
        assert_eq!(e.line, 3);
        let e = bad("name = \"bad name\"\nkernel = \"k\"\n");
        assert_eq!(e.line, 1);
        let e = bad("name = \"x\"\nkernel = \"k\"\ntype = \"hvm\"\n");
        assert_eq!(e.line, 3);
        let e = bad("name = \"x\"\nkernel = \"k\"\nmemory =\n");
        assert_eq!(e.line, 3);
        assert!(e.to_string().starts_with("line 3: "));
    }

    #[test]
    fn hostile_input_never_panics() {
        for text in [
            "", "=", "[", "]", "a=[", "a=[,]", "a = 'x", "\u{0}", "a=1;;b=2", "a=\"\\",
        ] {
            let _ = parse_settings(text);
            let _ = DomainConfig::parse(text);
        }
        // Bytes of a valid config cut at every point.
        for n in 0..DEMO.len() {
            let _ = DomainConfig::parse(&DEMO[..n]);
        }
    }
}
