//! Go-style durations (`"8760h"`, `"90m"`, `"1h30m"`, `"1.5h"`), as Kubernetes users
//! know them from `metav1.Duration` and kubectl flags: the CLI's `--timeout`/`--ttl`,
//! the operator's intervals, and (in the narrower form the CRD admits, see
//! [`crate::api::validation`]) `spec.pki.certificateValidity` and `spec.pki.renewBefore`.

use std::time::Duration;

/// A duration string that is not a Go-style positive duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    /// The rejected text, verbatim.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Nanoseconds per unit, longest unit names first so "ms" is not read as "m".
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3600 * 1_000_000_000),
];

/// Parses a Go-style duration: one or more `<number><unit>` terms, the number
/// an integer or decimal fraction, the unit one of ns, us (µs), ms, s, m, h.
/// `"0"` alone is zero. Signs are rejected: no PKI duration can be negative.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let error = |reason| DurationError { input: input.to_string(), reason };
    if input.is_empty() {
        return Err(error("empty duration"));
    }
    if input.starts_with(['-', '+']) {
        return Err(error("a sign is not allowed"));
    }
    if input == "0" {
        return Ok(Duration::ZERO);
    }

    let mut rest = input;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let integer_digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (integer, after_integer) = rest.split_at(integer_digits);
        let (fraction, after_number) = match after_integer.strip_prefix('.') {
            Some(after_dot) => {
                let fraction_digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(fraction_digits)
            }
            None => ("", after_integer),
        };
        if integer.is_empty() && fraction.is_empty() {
            return Err(error("expected a number"));
        }

        let unit_length =
            after_number.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after_number.len());
        let (unit, after_unit) = after_number.split_at(unit_length);
        if unit.is_empty() {
            return Err(error("missing unit (ns, us, ms, s, m or h)"));
        }
        let Some(&(_, unit_nanos)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(error("unknown unit (expected ns, us, ms, s, m or h)"));
        };

        let whole: u128 =
            if integer.is_empty() { 0 } else { integer.parse().map_err(|_| error("number too large"))? };
        let mut term = whole.checked_mul(unit_nanos).ok_or_else(|| error("duration too large"))?;
        // Digits past nanosecond precision of an hour cannot change the result.
        let fraction = &fraction[..fraction.len().min(18)];
        if !fraction.is_empty() {
            let numerator: u128 = fraction.parse().map_err(|_| error("number too large"))?;
            let denominator = 10u128.pow(fraction.len() as u32);
            term += numerator * unit_nanos / denominator;
        }
        total_nanos = total_nanos.checked_add(term).ok_or_else(|| error("duration too large"))?;
        rest = after_unit;
    }

    let seconds = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| error("duration too large"))?;
    // The remainder is below one second, so it always fits in u32.
    let nanos = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_used_in_pki_specs() {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert_eq!(parse_duration("8760h"), Ok(hours(8760)));
        assert_eq!(parse_duration("720h"), Ok(hours(720)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(90 * 60)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(
            parse_duration("2h45m30.5s"),
            Ok(Duration::from_millis((2 * 3600 + 45 * 60 + 30) * 1000 + 500))
        );
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_malformed_input_naming_it() {
        for (input, reason) in [
            ("", "empty duration"),
            ("10", "missing unit (ns, us, ms, s, m or h)"),
            ("10d", "unknown unit (expected ns, us, ms, s, m or h)"),
            ("1h 30m", "unknown unit (expected ns, us, ms, s, m or h)"),
            ("h", "expected a number"),
            ("1h.m", "expected a number"),
            ("-1h", "a sign is not allowed"),
            ("+1h", "a sign is not allowed"),
            ("99999999999999999999999999999999999999999h", "number too large"),
            ("9999999999999999999999h", "duration too large"),
        ] {
            let error = parse_duration(input).expect_err(input);
            assert_eq!(error.input, input);
            assert_eq!(error.reason, reason, "for {input:?}");
            assert!(error.to_string().contains(&format!("{input:?}")), "{error}");
        }
    }
}
