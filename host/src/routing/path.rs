//! Request path normalisation before routing (RFC 3986 §6.2.2): percent-encoded unreserved
//! characters are decoded, dot segments removed (§5.2.4), and optionally runs of slashes
//! merged. A route then matches the same path its upstream will resolve: `/public/../admin`
//! or `/public/%2e%2e/admin` cannot reach `/admin` through a `/public` route, nor `//admin`
//! slip past an `/admin` route into a catch-all.
//!
//! Encoded slashes and backslashes (`%2F`, `%5C`) stay encoded: they are data inside a
//! segment (GitLab's `group%2Fproject`), not separators.

/// The normalised form of `path`, or `None` when it is already normal (the common case,
/// found in one pass without allocating). Paths not starting with `/` (`*`) are left alone.
pub fn normalize(path: &str, merge_slashes: bool) -> Option<String> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') || !may_change(b, merge_slashes) {
        return None;
    }
    let decoded = decode_unreserved(path);
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, s) in segments.iter().enumerate() {
        match *s {
            "." => {}
            ".." => {
                out.pop();
            }
            "" if merge_slashes && i != last => continue,
            s => {
                out.push(s);
                continue;
            }
        }
        // A final `.` or `..` leaves a directory: `/a/.` is `/a/`.
        if i == last {
            out.push("");
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for s in &out {
        normal.push('/');
        normal.push_str(s);
    }
    if normal.is_empty() {
        normal.push('/');
    }
    (normal != path).then_some(normal)
}

/// Whether `b` has an escape, a segment starting with a dot, or (when merging) a `//`.
fn may_change(b: &[u8], merge_slashes: bool) -> bool {
    b.iter().enumerate().any(|(i, &c)| match c {
        b'%' => true,
        b'/' => match b.get(i + 1) {
            Some(b'.') => true,
            Some(b'/') => merge_slashes,
            _ => false,
        },
        _ => false,
    })
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// `path` with escapes of unreserved characters decoded and other escapes' hex digits in
/// upper case (§6.2.2.1, §6.2.2.2).
fn decode_unreserved(path: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            let c = h << 4 | l;
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                out.push(c);
            } else {
                out.extend_from_slice(&[b'%', HEX[usize::from(h)], HEX[usize::from(l)]]);
            }
            i += 3;
        } else {
            // Bytes, not chars: a path may carry raw UTF-8, which is copied as it is.
            out.push(b[i]);
            i += 1;
        }
    }
    // Only ASCII was decoded, so the bytes are as valid UTF-8 as `path`.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> String {
        normalize(p, true).unwrap_or_else(|| p.to_string())
    }

    #[test]
    fn normal_paths_are_left_alone_without_allocating() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/a.b/c..d",
            "*",
            "/.well-known/x",
            "/a/..b",
        ] {
            assert_eq!(normalize(p, true), None, "{p}");
        }
    }

    #[test]
    fn dot_segments_are_removed_as_rfc_3986_says() {
        // RFC 3986 §5.2.4's examples and the traversal cases.
        assert_eq!(n("/a/b/c/./../../g"), "/a/g");
        assert_eq!(n("/mid/content=5/../6"), "/mid/6");
        assert_eq!(n("/public/../admin"), "/admin");
        assert_eq!(n("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(n("/a/."), "/a/");
        assert_eq!(n("/a/.."), "/");
        assert_eq!(n("/."), "/");
    }

    #[test]
    fn escaped_dots_and_unreserved_characters_are_decoded_first() {
        assert_eq!(n("/public/%2e%2E/admin"), "/admin");
        assert_eq!(n("/%61dmin"), "/admin");
        assert_eq!(n("/a%7eb"), "/a~b");
        // Reserved and other escapes stay escaped, in upper case.
        assert_eq!(n("/group%2fproject"), "/group%2Fproject");
        assert_eq!(n("/a%5c..%5cb"), "/a%5C..%5Cb");
        assert_eq!(n("/sp%20ace"), "/sp%20ace");
        // A malformed escape is kept as it is.
        assert_eq!(normalize("/a%zz", true), None);
        // Raw UTF-8 in a path is kept byte for byte.
        assert_eq!(n("/café/./a%20b"), "/café/a%20b");
        assert_eq!(n("/naïve//x"), "/naïve/x");
    }

    #[test]
    fn slashes_are_merged_only_when_asked() {
        assert_eq!(n("//admin"), "/admin");
        assert_eq!(n("/a//b///c/"), "/a/b/c/");
        assert_eq!(normalize("//admin", false), None);
        assert_eq!(
            normalize("/a//../b", false).as_deref(),
            Some("/a/b"),
            "RFC 3986: the empty segment is the one removed"
        );
    }
}
