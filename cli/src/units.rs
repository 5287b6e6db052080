//! Human-written sizes and durations on the command line: `64MiB`, `1.5GB`, `4096`; `30s`,
//! `500ms`, `5m`, `1h30m`.

use std::time::Duration;

/// Parses a byte size: a number and an optional unit, `B`, `KB`/`MB`/`GB`/`TB` (powers of
/// 1000) or `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024), case-insensitive; a bare number is
/// bytes. A decimal number needs a unit larger than a byte (`1.5KiB`, not `1.5` or `1.5B`);
/// its product is rounded to the nearest byte (`1.0006KB` is 1001 bytes).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!("unknown size unit {other:?} in {text:?} (B, KB, MiB, GiB, …)"));
        }
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(multiplier).ok_or_else(|| format!("{text:?} is too large"));
    }
    let fraction: f64 = number.parse().map_err(|_| format!("{text:?} is not a size"))?;
    if multiplier == 1 {
        return Err(format!("{text:?}: a byte count is a whole number (or give a unit: 1.5KiB)"));
    }
    let bytes = (fraction * multiplier as f64).round();
    if bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64 {
        Ok(bytes as u64)
    } else {
        Err(format!("{text:?} is out of range"))
    }
}

/// Parses a duration: one or more `<number><unit>` parts with units `ms`, `s`, `m`, `h`, `d`
/// (`1h30m`, `250ms`, `1.5s`); a bare number is seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("an empty duration".to_owned());
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|error| format!("{text:?}: {error}"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(0);
        let unit_len = rest[number_len..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - number_len);
        let (number, unit) = (&rest[..number_len], &rest[number_len..number_len + unit_len]);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration (30s, 500ms, 1h30m)"))?;
        let seconds_per_unit = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3_600.0,
            "d" => 86_400.0,
            other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
        };
        let part = Duration::try_from_secs_f64(value * seconds_per_unit)
            .map_err(|error| format!("{text:?}: {error}"))?;
        total = total.checked_add(part).ok_or_else(|| format!("{text:?} is too long"))?;
        rest = &rest[number_len + unit_len..];
    }
    Ok(total)
}

/// Parses a duration as [`parse_duration`] and refuses zero, for limits that would refuse
/// everything.
pub(crate) fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(format!("{text:?}: must be more than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64mib"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("2 KB"), Ok(2000));
        assert_eq!(parse_size("12B"), Ok(12));
        assert_eq!(parse_size("1.0006KB"), Ok(1001), "rounded to the nearest byte");
    }

    #[test]
    fn sizes_refuse_nonsense() {
        for bad in ["", "MiB", "12 parsecs", "-5", "1.2.3MB", "99999999999TiB", "x1", "1.5", "0.5B"]
        {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn durations_take_units_and_sums() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
    }

    #[test]
    fn positive_durations_refuse_zero() {
        assert_eq!(parse_positive_duration("1ms"), Ok(Duration::from_millis(1)));
        assert!(parse_positive_duration("0s").is_err());
        assert!(parse_positive_duration("0").is_err());
    }

    #[test]
    fn durations_refuse_nonsense() {
        for bad in ["", "s", "10 years", "5x", "-1s", "1.2.3s", "ms5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
