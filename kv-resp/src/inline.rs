//! Splitting an inline command (`SET k "a b"` typed into telnet) into arguments.

use bytes::Bytes;

use crate::error::{Error, Result};

/// Splits `line` (without its line ending) into arguments exactly as Redis's `sdssplitargs`:
///
/// - arguments are separated by blanks (space, `\t`, `\n`, `\v`, `\f`, `\r`);
/// - `"double quotes"` allow spaces and the escapes `\xHH`, `\n`, `\r`, `\t`, `\b`, `\a` and
///   `\<any byte>` (that byte);
/// - `'single quotes'` allow spaces and the escape `\'`;
/// - a closing quote must be followed by a blank or the end of the line, and quotes must
///   close, else [`Error::UnbalancedQuotes`];
/// - quotes may start in the middle of an argument (`a"b c"` is `ab c`);
/// - a NUL byte ends the line (Redis handles the line as a C string).
///
/// Arguments without quotes are slices of `line`; only quoted ones are copied.
pub(crate) fn split_inline(line: &Bytes, out: &mut Vec<Bytes>) -> Result<()> {
    let end = memchr::memchr(0, line).unwrap_or(line.len());
    let s = &line[..end];
    let at = |i: usize| s.get(i).copied();
    let mut p = 0;
    loop {
        while at(p).is_some_and(is_space) {
            p += 1;
        }
        if p >= s.len() {
            return Ok(());
        }
        let start = p;
        let mut quoted: Option<Vec<u8>> = None;
        let (mut in_double, mut in_single) = (false, false);
        let token_end;
        loop {
            let c = at(p);
            if in_double {
                let cur = quoted.get_or_insert_with(Vec::new);
                match (c, at(p + 1)) {
                    (Some(b'\\'), Some(b'x'))
                        if at(p + 2).is_some_and(|h| h.is_ascii_hexdigit())
                            && at(p + 3).is_some_and(|h| h.is_ascii_hexdigit()) =>
                    {
                        cur.push(hex(s[p + 2]) * 16 + hex(s[p + 3]));
                        p += 3;
                    }
                    (Some(b'\\'), Some(e)) => {
                        cur.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        p += 1;
                    }
                    (Some(b'"'), next) => {
                        if next.is_some_and(|n| !is_space(n)) {
                            return Err(Error::UnbalancedQuotes);
                        }
                        token_end = p;
                        p += 1;
                        break;
                    }
                    (None, _) => return Err(Error::UnbalancedQuotes),
                    (Some(c), _) => cur.push(c),
                }
            } else if in_single {
                let cur = quoted.get_or_insert_with(Vec::new);
                match (c, at(p + 1)) {
                    (Some(b'\\'), Some(b'\'')) => {
                        cur.push(b'\'');
                        p += 1;
                    }
                    (Some(b'\''), next) => {
                        if next.is_some_and(|n| !is_space(n)) {
                            return Err(Error::UnbalancedQuotes);
                        }
                        token_end = p;
                        p += 1;
                        break;
                    }
                    (None, _) => return Err(Error::UnbalancedQuotes),
                    (Some(c), _) => cur.push(c),
                }
            } else {
                match c {
                    None | Some(b' ' | b'\n' | b'\r' | b'\t') => {
                        token_end = p;
                        if c.is_some() {
                            p += 1;
                        }
                        break;
                    }
                    Some(q @ (b'"' | b'\'')) => {
                        // What came before the quote, unquoted, starts the argument.
                        quoted.get_or_insert_with(|| s[start..p].to_vec());
                        if q == b'"' {
                            in_double = true;
                        } else {
                            in_single = true;
                        }
                    }
                    Some(c) => {
                        if let Some(cur) = quoted.as_mut() {
                            cur.push(c);
                        }
                    }
                }
            }
            p += 1;
        }
        out.push(match quoted {
            Some(bytes) => Bytes::from(bytes),
            None => line.slice(start..token_end),
        });
    }
}

/// C's `isspace` in the "C" locale.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The value of an ASCII hex digit (the caller checked it is one).
fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c.wrapping_sub(b'A').wrapping_add(10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        split_inline(&Bytes::copy_from_slice(line), &mut out)?;
        Ok(out.into_iter().map(|b| b.to_vec()).collect())
    }

    fn v(args: &[&[u8]]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.to_vec()).collect()
    }

    #[test]
    fn splits_like_sdssplitargs() {
        assert_eq!(split(b"PING").unwrap(), v(&[b"PING"]));
        assert_eq!(split(b"  set  k\tv  ").unwrap(), v(&[b"set", b"k", b"v"]));
        assert_eq!(split(b"").unwrap(), v(&[]));
        assert_eq!(split(b" \t ").unwrap(), v(&[]));
        assert_eq!(
            split(br#"set "a b" 'c d'"#).unwrap(),
            v(&[b"set", b"a b", b"c d"])
        );
        assert_eq!(
            split(br#""\x41\x4a\n\r\t\b\a\"\\\q""#).unwrap(),
            v(&[b"AJ\n\r\t\x08\x07\"\\q"])
        );
        assert_eq!(split(br#""\x4g""#).unwrap(), v(&[b"x4g"]));
        assert_eq!(split(br"'it\'s' 'a\b'").unwrap(), v(&[b"it's", b"a\\b"]));
        assert_eq!(split(br#"a"b c"d"#), Err(Error::UnbalancedQuotes));
        assert_eq!(split(br#"a"b c""#).unwrap(), v(&[b"ab c"]));
        assert_eq!(split(br#""""#).unwrap(), v(&[b""]));
        assert_eq!(split(b"a\x0bb").unwrap(), v(&[b"a\x0bb"]));
        assert_eq!(split(b"get k\0ignored").unwrap(), v(&[b"get", b"k"]));
    }

    #[test]
    fn unbalanced_quotes_are_errors() {
        for bad in [&br#""abc"#[..], b"'abc", br#""a"b"#, b"'a'b", br#""abc\"#] {
            assert_eq!(split(bad), Err(Error::UnbalancedQuotes), "{bad:?}");
        }
    }

    #[test]
    fn unquoted_arguments_are_not_copied() {
        let line = Bytes::from_static(b"GET key");
        let mut out = Vec::new();
        split_inline(&line, &mut out).unwrap();
        assert_eq!(out[1].as_ptr(), line[4..].as_ptr());
    }
}
