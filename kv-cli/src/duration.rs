//! Durations as the REPL reads and prints them: `500ms`, `30s`, `5m`, `2h`, `1d` (a bare
//! number is seconds), for `put ... --ttl` and `ttl`.

/// The longest TTL `put --ttl` takes: 100 years. Anything longer is a key that should not
/// expire; refusing it keeps `now + ttl` far inside what an expiry can hold
/// ([`kv_cluster::MAX_EXPIRES`], about the year 10889), in the REPL as over `--connect`.
pub const MAX_TTL_MILLIS: u64 = 100 * 365 * DAY;

const SECOND: u64 = 1000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// The units, longest suffix first (`ms` before `m` and `s`).
const UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", SECOND),
    ("m", MINUTE),
    ("h", HOUR),
    ("d", DAY),
];

/// A TTL in milliseconds: a whole number of `ms`, `s`, `m`, `h` or `d` (a bare number is
/// seconds), more than zero and at most [`MAX_TTL_MILLIS`].
///
/// # Errors
/// A one-line message for a zero, negative, malformed or too long duration.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let hint = "use a whole number with ms, s, m, h or d, e.g. 500ms, 30s, 5m, 2h, 1d";
    let (digits, unit) = UNITS
        .iter()
        .find_map(|&(suffix, unit)| text.strip_suffix(suffix).map(|d| (d, unit)))
        .unwrap_or((text, SECOND));
    let number = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if digits.strip_prefix('-').is_some_and(number) {
        return Err(format!("TTL must be more than zero: {text}"));
    }
    if !number(digits) {
        return Err(format!("not a duration: {text:?} ({hint})"));
    }
    let too_long = || {
        format!(
            "TTL too long: {text} (at most {}, 100 years)",
            human(MAX_TTL_MILLIS)
        )
    };
    // Digits only: a parse error is an overflow.
    let n: u64 = digits.parse().map_err(|_| too_long())?;
    let ms = n.checked_mul(unit).ok_or_else(too_long)?;
    if ms == 0 {
        return Err(format!("TTL must be more than zero: {text}"));
    }
    if ms > MAX_TTL_MILLIS {
        return Err(too_long());
    }
    Ok(ms)
}

/// `ms` for a person: `750ms`, `29.8s`, `4m59s`, `2h`, `1d3h` (rounded down past a minute).
pub fn human(ms: u64) -> String {
    if ms < SECOND {
        return format!("{ms}ms");
    }
    if ms < MINUTE {
        // Tenths, rounded down: a TTL never reads as longer than it is.
        let tenths = ms / 100;
        return match tenths % 10 {
            0 => format!("{}s", tenths / 10),
            t => format!("{}.{t}s", tenths / 10),
        };
    }
    let pair = |big: u64, big_unit: &str, small: u64, small_unit: &str| match small {
        0 => format!("{big}{big_unit}"),
        s => format!("{big}{big_unit}{s}{small_unit}"),
    };
    if ms < HOUR {
        pair(ms / MINUTE, "m", ms % MINUTE / SECOND, "s")
    } else if ms < DAY {
        pair(ms / HOUR, "h", ms % HOUR / MINUTE, "m")
    } else {
        pair(ms / DAY, "d", ms % DAY / HOUR, "h")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_and_a_bare_number_of_seconds() {
        for (text, ms) in [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("45", 45_000),
            ("1ms", 1),
            ("36500d", MAX_TTL_MILLIS),
        ] {
            assert_eq!(parse_ttl(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn zero_negative_garbage_and_overflow_are_one_clear_line() {
        for zero in ["0", "0s", "0ms", "-5s", "-1", "-0"] {
            let e = parse_ttl(zero).unwrap_err();
            assert!(e.starts_with("TTL must be more than zero"), "{zero}: {e}");
        }
        for bad in [
            "", "s", "abc", "1.5s", "5 m", "5M", "+5s", "5x", "1e3", "ms", "--5s",
        ] {
            let e = parse_ttl(bad).unwrap_err();
            assert!(e.starts_with("not a duration"), "{bad}: {e}");
        }
        for long in [
            "36501d",
            "18446744073709551615d",
            "18446744073709551616",
            "99999999999999999999999999ms",
        ] {
            let e = parse_ttl(long).unwrap_err();
            assert_eq!(
                e,
                format!("TTL too long: {long} (at most 36500d, 100 years)")
            );
        }
    }

    #[test]
    fn human_forms_round_down() {
        for (ms, text) in [
            (0, "0ms"),
            (750, "750ms"),
            (1_000, "1s"),
            (29_812, "29.8s"),
            (59_999, "59.9s"),
            (60_000, "1m"),
            (299_999, "4m59s"),
            (7_200_000, "2h"),
            (5_400_000, "1h30m"),
            (86_400_000, "1d"),
            (97_200_000, "1d3h"),
        ] {
            assert_eq!(human(ms), text, "{ms}");
        }
    }
}
