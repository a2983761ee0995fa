//! Xenstore path rules (`docs/misc/xenstore.txt`, C xenstored's `canonicalize`): absolute
//! paths start with `/`; a domain's relative paths are resolved against
//! `/local/domain/<domid>`; only alphanumerics and `-/_@` are allowed; no empty path, no
//! `//`, no trailing `/` except the root; at most [`ABS_PATH_MAX`] bytes, and for an
//! unprivileged domain at most [`REL_PATH_MAX`] below its own `/local/domain/<domid>/`.
//! Paths starting with `@` name the special watch nodes (`@introduceDomain`,
//! `@releaseDomain`), allowed only where the operation accepts them.

use alloc::format;
use alloc::string::String;
use xen_abi::DomId;

use crate::wire::{XsError, ABS_PATH_MAX, REL_PATH_MAX};

/// Special watch path fired when a domain is introduced.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// Special watch path fired when a domain is released.
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

/// `/local/domain/<domid>`: a domain's home, the base of its relative paths.
pub fn domain_path(dom: DomId) -> String {
    format!("/local/domain/{}", dom.raw())
}

/// A path after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canonical {
    /// The absolute path (or the special `@...` name).
    pub path: String,
    /// Whether the caller gave it relative (watch events then report relative paths).
    pub relative: bool,
}

impl Canonical {
    /// Whether this is a special `@...` name.
    pub fn is_special(&self) -> bool {
        self.path.starts_with('@')
    }
}

fn valid_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'/' | b'_' | b'@')
}

/// Validate `raw` as given by domain `dom` and make it absolute.
pub fn canonicalize(
    dom: DomId,
    raw: &str,
    allow_special: bool,
    privileged: bool,
) -> Result<Canonical, XsError> {
    if raw.is_empty() || !raw.bytes().all(valid_char) {
        return Err(XsError::Inval);
    }
    if raw.starts_with('@') {
        if !allow_special {
            return Err(XsError::Inval);
        }
        if raw.len() > ABS_PATH_MAX {
            return Err(XsError::Inval);
        }
        return Ok(Canonical {
            path: String::from(raw),
            relative: false,
        });
    }
    let relative = !raw.starts_with('/');
    let path = if relative {
        format!("{}/{}", domain_path(dom), raw)
    } else {
        String::from(raw)
    };
    if (path.ends_with('/') && path != "/") || path.contains("//") || path.len() > ABS_PATH_MAX {
        return Err(XsError::Inval);
    }
    // Unprivileged domains get REL_PATH_MAX below /local/domain/<any id>/ (C xenstored's
    // ACC_PATHLEN quota, measured after that prefix).
    if !privileged && path_len_below_domain(&path) > REL_PATH_MAX {
        return Err(XsError::Inval);
    }
    Ok(Canonical { path, relative })
}

/// Length of `path` after a leading `/local/domain/<digits>/`, or all of it.
fn path_len_below_domain(path: &str) -> usize {
    if let Some(rest) = path.strip_prefix("/local/domain/") {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if (1..=5).contains(&digits) {
            if let Some(tail) = rest.get(digits..).and_then(|t| t.strip_prefix('/')) {
                return tail.len();
            }
        }
    }
    path.len()
}

/// The parent of an absolute path (`None` for `/` and special names).
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" || !path.starts_with('/') {
        return None;
    }
    let cut = path.rfind('/')?;
    if cut == 0 {
        Some("/")
    } else {
        path.get(..cut)
    }
}

/// The last component of an absolute path.
pub fn basename(path: &str) -> &str {
    path.rfind('/')
        .and_then(|i| path.get(i + 1..))
        .unwrap_or(path)
}

/// Whether `child` is `parent` or lies below it, at most `depth` levels below when given
/// (C xenstored's `is_child`; `/` is everybody's parent).
pub fn is_child(child: &str, parent: &str, depth: Option<u32>) -> bool {
    let Some(rest) = child.strip_prefix(parent) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let below = if parent == "/" {
        rest
    } else if let Some(r) = rest.strip_prefix('/') {
        r
    } else {
        return false;
    };
    match depth {
        None => true,
        Some(d) => {
            // Levels below: 1 + number of '/' in the remainder.
            let levels = 1 + below.bytes().filter(|&b| b == b'/').count();
            u32::try_from(levels).is_ok_and(|l| l <= d)
        }
    }
}

/// Decimal domain id as on the wire (`0..=65535`, digits only).
pub fn parse_domid(s: &str) -> Result<DomId, XsError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(XsError::Inval);
    }
    s.parse::<u16>().map(DomId::new).map_err(|_| XsError::Inval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn d(n: u16) -> DomId {
        DomId::new(n)
    }

    #[test]
    fn canonical_forms() {
        let c = canonicalize(d(3), "device/vbd", false, false).unwrap();
        assert_eq!(c.path, "/local/domain/3/device/vbd");
        assert!(c.relative);
        assert_eq!(canonicalize(d(3), "/", false, false).unwrap().path, "/");
        for bad in ["", "/a/", "/a//b", "a b", "/a\u{e9}", "@x", "/a/b.c"] {
            assert_eq!(
                canonicalize(d(3), bad, false, false),
                Err(XsError::Inval),
                "{bad}"
            );
        }
        assert!(canonicalize(d(3), "@releaseDomain", true, false)
            .unwrap()
            .is_special());
        let long = "a".repeat(REL_PATH_MAX + 1);
        assert_eq!(canonicalize(d(3), &long, false, false), Err(XsError::Inval));
        assert!(canonicalize(d(0), &long, false, true).is_ok());
        let ok = "a".repeat(REL_PATH_MAX);
        assert!(canonicalize(d(3), &ok, false, false).is_ok());
        let huge = "/".to_string() + &"a".repeat(ABS_PATH_MAX);
        assert_eq!(canonicalize(d(0), &huge, false, true), Err(XsError::Inval));
    }

    #[test]
    fn parents_and_children() {
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        assert_eq!(basename("/a/bc"), "bc");
        assert!(is_child("/a/b", "/a", None));
        assert!(is_child("/a", "/a", Some(0)));
        assert!(!is_child("/ab", "/a", None));
        assert!(is_child("/x", "/", None));
        assert!(is_child("/a/b", "/a", Some(1)));
        assert!(!is_child("/a/b/c", "/a", Some(1)));
        assert!(!is_child("/a/b", "/a", Some(0)));
        assert!(is_child("/x", "/", Some(1)));
        assert!(!is_child("/x/y", "/", Some(1)));
    }

    #[test]
    fn domids() {
        assert_eq!(parse_domid("17"), Ok(d(17)));
        assert_eq!(parse_domid("65535"), Ok(d(65535)));
        for bad in ["", "-1", "65536", "1x", "000001"] {
            assert_eq!(parse_domid(bad), Err(XsError::Inval), "{bad}");
        }
    }
}
