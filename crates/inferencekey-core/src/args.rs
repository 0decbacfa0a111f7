//! Rules for argument values as a user gives them (plain integers and float seconds, e.g. from a binding):
//! lower bounds, durations, and their wording. Every such rule lives here or next to the type it builds, so
//! a Rust caller and the Python surface refuse the same values with the same message, before any request.

use std::time::Duration;

use crate::error::{Error, Result};

/// The validation error for an integer argument below its bound (or beyond what the SDK can carry).
pub(crate) fn below_bound(name: &str, min: i64) -> Error {
    Error::validation(format_args!("{name} must be an integer of at least {min}"))
}

/// An integer argument checked against its lower bound: below `min`, or too large for `T`, is a validation
/// error (never an overflow, and never a round trip to the server).
pub(crate) fn at_least<T: TryFrom<i64>>(name: &str, value: i64, min: i64) -> Result<T> {
    if value < min {
        return Err(below_bound(name, min));
    }
    T::try_from(value).map_err(|_| too_large(name))
}

/// The validation error for an integer argument too large for what it sets.
fn too_large(name: &str) -> Error {
    Error::validation(format_args!("{name} is too large"))
}

/// An integer argument that must lie in `min..=max` (a port, a seed), or a validation error naming the argument
/// and the range.
pub fn int_in_range<T: TryFrom<i128>>(name: &str, value: i128, min: i128, max: i128) -> Result<T> {
    if (min..=max).contains(&value) {
        if let Ok(value) = T::try_from(value) {
            return Ok(value);
        }
    }
    Err(Error::validation(format_args!(
        "{name} must be an integer from {min} to {max}"
    )))
}

/// The validation error for an integer a binding cannot even carry (beyond 64 bits), worded as the core's own
/// range checks are.
pub fn integer_out_of_range(name: &str, negative: bool) -> Error {
    if negative {
        Error::validation(format_args!("{name} is too small"))
    } else {
        too_large(name)
    }
}

/// A timeout in seconds that must be positive: zero, negative, NaN, infinite or too large for a `Duration`
/// is a validation error naming the argument.
pub(crate) fn positive_seconds(name: &str, seconds: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Error::validation(format_args!(
                "{name} must be a positive, finite number of seconds"
            ))
        })
}

/// The deadline of a readiness wait from the user's seconds (for `ManagementClient::watch_readiness`): zero
/// is allowed (the wait ends at once unless the workload is ready); negative, NaN, infinite or too large for a
/// `Duration` is a validation error.
pub fn readiness_timeout(seconds: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| Error::validation("timeout must be a non-negative number of seconds"))
}

/// The message of a binding's `TypeError` for an argument of the wrong type: it names the argument, what it must be
/// (`"a str"`, `"an int"`) and the type it got.
pub fn wrong_type(name: &str, expected: &str, got: &str) -> String {
    format!("{name} must be {expected}, not {got}")
}

/// The validation error for a spec field of the wrong type (`expected` is `"a string"` or `"a dict"`).
pub fn field_type(name: &str, expected: &str) -> Error {
    Error::validation(format_args!("{name} must be {expected}"))
}

/// The deepest nesting of a JSON-like argument accepted (what the platform's JSON parsers accept).
pub const MAX_JSON_DEPTH: usize = 128;

/// Why a value given as JSON cannot be carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotJson<'a> {
    /// A container holds itself.
    Cycle,
    /// Nested deeper than [`MAX_JSON_DEPTH`].
    TooDeep,
    /// An integer beyond 64 bits.
    IntegerTooLarge,
    /// NaN or an infinity.
    NonFinite,
    /// A value of a type with no JSON form (the type's name).
    Type(&'a str),
    /// A mapping key that is not a string.
    KeyNotString,
}

/// The validation error for an argument (`what`) holding something JSON cannot carry.
pub fn not_json(what: &str, reason: NotJson<'_>) -> Error {
    Error::validation(match reason {
        NotJson::Cycle => format!("{what} holds a reference cycle, which JSON cannot carry"),
        NotJson::TooDeep => format!("{what} nests deeper than {MAX_JSON_DEPTH} levels"),
        NotJson::IntegerTooLarge => format!("{what} holds an integer too large for JSON"),
        NotJson::NonFinite => {
            format!("{what} holds a float JSON cannot carry (NaN or infinity)")
        }
        NotJson::Type(name) => {
            format!("{what} holds a value of type {name}, which is not JSON-compatible")
        }
        NotJson::KeyNotString => format!("{what} keys must be strings"),
    })
}

/// The configuration error for a local platform that could not start (`cause` says why).
pub fn local_platform_failed(cause: impl std::fmt::Display) -> Error {
    Error::configuration(format!("cannot start the local platform: {cause}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn integer_bounds() {
        assert_eq!(at_least::<u32>("n", 0, 0).unwrap(), 0);
        assert_eq!(at_least::<u32>("n", 7, 1).unwrap(), 7);
        assert_eq!(
            at_least::<u64>("n", i64::MAX, 1).unwrap(),
            i64::MAX.unsigned_abs()
        );
        let err = at_least::<u32>("max_retries", 1 << 40, 0).unwrap_err();
        assert_eq!(err.message, "validation error: max_retries is too large");
        for (value, min) in [(-1, 0), (0, 1), (i64::MIN, 1)] {
            let err = at_least::<u32>("max_retries", value, min).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Validation);
            assert_eq!(
                err.message,
                format!("validation error: max_retries must be an integer of at least {min}")
            );
            assert_eq!(err.status, None);
        }
    }

    #[test]
    fn positive_seconds_rule() {
        assert_eq!(
            positive_seconds("timeout", 0.5).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            positive_seconds("timeout", 1e-9).unwrap(),
            Duration::from_nanos(1)
        );
        for bad in [
            0.0,
            -0.0,
            -1.0,
            1e-12,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
        ] {
            let err = positive_seconds("connect_timeout", bad).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Validation, "{bad}");
            assert_eq!(
                err.message,
                "validation error: connect_timeout must be a positive, finite number of seconds"
            );
        }
    }

    #[test]
    fn readiness_timeout_rule() {
        assert_eq!(readiness_timeout(0.0).unwrap(), Duration::ZERO);
        assert_eq!(readiness_timeout(2.5).unwrap(), Duration::from_millis(2500));
        assert_eq!(
            readiness_timeout(86_400.0 * 365.0).unwrap(),
            Duration::from_secs(86_400 * 365)
        );
        for bad in [
            -1.0,
            -1e-9,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
        ] {
            let err = readiness_timeout(bad).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Validation, "{bad}");
            assert_eq!(
                err.message,
                "validation error: timeout must be a non-negative number of seconds"
            );
            assert_eq!(err.status, None);
        }
    }
}
