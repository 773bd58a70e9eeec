//! Decimal integers and doubles, parsed and formatted the way Redis does.

use std::io::Write as _;

/// Longest decimal `i64` with sign: `-9223372036854775808`.
pub(crate) const MAX_I64_LEN: usize = 20;

/// Parses a decimal `i64` exactly as Redis's `string2ll`: an optional `-`, no `+`, no leading
/// zeros (except `0` itself), no spaces, no overflow.
pub(crate) fn parse_i64_strict(s: &[u8]) -> Option<i64> {
    // LONG_STR_SIZE in Redis is 21: 20 characters at most.
    if s.is_empty() || s.len() > MAX_I64_LEN {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        // -(i64::MIN) does not fit an i64: go through i128.
        i64::try_from(-i128::from(v)).ok()
    } else {
        i64::try_from(v).ok()
    }
}

/// Parses a RESP3 integer (`:`) payload: like [`parse_i64_strict`] but also accepting a
/// leading `+`, which the RESP3 specification allows.
pub(crate) fn parse_i64_frame(s: &[u8]) -> Option<i64> {
    match s.split_first() {
        Some((b'+', rest)) if rest.first() != Some(&b'-') => parse_i64_strict(rest),
        _ => parse_i64_strict(s),
    }
}

/// Parses a RESP3 double (`,`) payload: a decimal (with optional exponent), `inf`, `-inf` or
/// `nan`, case-insensitively.
pub(crate) fn parse_f64(s: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(s).ok()?;
    if text.is_empty() || text.starts_with(char::is_whitespace) {
        return None;
    }
    text.parse::<f64>().ok()
}

/// Writes `v` in decimal into `buf`, returning the digits' slice.
pub(crate) fn format_i64(v: i64, buf: &mut [u8; MAX_I64_LEN]) -> &[u8] {
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

/// Longest text [`format_f64`] writes (Rust's shortest round-trip form of any `f64`).
pub(crate) const MAX_F64_LEN: usize = 32;

/// Writes `v` as Redis's `d2string` does: `nan`, `inf`, `-inf`, `0`, `-0`, an integer when
/// `v` is one within `±i64::MAX / 2`, else the shortest text that parses back to `v` (Redis
/// uses `fpconv_dtoa`, also shortest round-trip; exponents may be spelled differently).
pub(crate) fn format_f64(v: f64, buf: &mut [u8; MAX_F64_LEN]) -> &[u8] {
    if v.is_nan() {
        return b"nan";
    }
    if v.is_infinite() {
        return if v < 0.0 { b"-inf" } else { b"inf" };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { b"-0" } else { b"0" };
    }
    const HALF: f64 = (i64::MAX / 2) as f64;
    if (-HALF..=HALF).contains(&v) && v.fract() == 0.0 {
        let mut ibuf = [0u8; MAX_I64_LEN];
        let digits = format_i64(v as i64, &mut ibuf);
        let n = digits.len();
        buf[..n].copy_from_slice(digits);
        return &buf[..n];
    }
    let total = buf.len();
    let mut cursor = &mut buf[..];
    // `{:?}` is Rust's shortest round-trip form, switching to an exponent for very large or
    // small magnitudes; it never exceeds MAX_F64_LEN bytes, so the write cannot fail.
    let written = match write!(cursor, "{v:?}") {
        Ok(()) => total - cursor.len(),
        Err(_) => 0,
    };
    &buf[..written]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_integers_follow_string2ll() {
        assert_eq!(parse_i64_strict(b"0"), Some(0));
        assert_eq!(parse_i64_strict(b"42"), Some(42));
        assert_eq!(parse_i64_strict(b"-1"), Some(-1));
        assert_eq!(parse_i64_strict(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64_strict(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b"01",
            b"-0",
            b" 1",
            b"1 ",
            b"1a",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999",
            b"123456789012345678901",
        ] {
            assert_eq!(
                parse_i64_strict(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_i64_frame(b"+5"), Some(5));
        assert_eq!(parse_i64_frame(b"+-5"), None);
    }

    #[test]
    fn integers_format_like_ll2string() {
        let mut buf = [0; MAX_I64_LEN];
        for v in [0, 1, -1, 10, i64::MAX, i64::MIN, 1234567890] {
            assert_eq!(format_i64(v, &mut buf), v.to_string().as_bytes());
        }
    }

    #[test]
    fn doubles_format_like_d2string() {
        let mut buf = [0; MAX_F64_LEN];
        let cases: [(f64, &str); 9] = [
            (f64::NAN, "nan"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (0.0, "0"),
            (-0.0, "-0"),
            (3.0, "3"),
            (-42.0, "-42"),
            (1.5, "1.5"),
            (0.1, "0.1"),
        ];
        for (v, text) in cases {
            assert_eq!(format_f64(v, &mut buf), text.as_bytes());
        }
        for v in [
            1e300,
            -1e-300,
            f64::MAX,
            f64::MIN_POSITIVE,
            1e18,
            123.456e-7,
        ] {
            let text = format_f64(v, &mut buf);
            let back = parse_f64(text).expect("parses back");
            assert_eq!(back.to_bits(), v.to_bits(), "{v}");
        }
    }
}
