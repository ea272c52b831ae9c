//! The arithmetic of `INCRBYFLOAT` and `HINCRBYFLOAT`: add a number written in decimal to one
//! stored in decimal, and store the sum as Redis writes it — fixed point, at most 17 digits after
//! the point, trailing zeros dropped (`10.5` + `0.1` is `10.6`, `5.0e3` + 0 is `5000`).
//!
//! Redis adds in the C `long double` of its machine, so on x86 a large result shows that type's
//! rounding error in the 17th decimal (`5000` + `0.1` is `5000.10000000000000009` there). Here
//! the sum of two decimals is computed exactly when both fit in 38 significant digits (every
//! number a client writes by hand), then rounded to 17 decimals: the "non surprising" result
//! Redis's own comment asks for, and the same on every node whatever its CPU. Only numbers that
//! do not fit fall back to `f64`, which is deterministic too.

/// Why a sum was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloatError {
    /// The stored value is not a number (the caller words it: `value is not a valid float`,
    /// `hash value is not a float`).
    Stored,
    /// The increment is not a number.
    Increment,
    /// Infinity or NaN would come out (or went in): Redis refuses to store them.
    NotFinite,
}

/// Digits after the point that Redis keeps (`%.17Lf`).
const DECIMALS: i32 = 17;

/// `stored + increment`, written as Redis writes it.
pub(crate) fn add(stored: &[u8], increment: &[u8]) -> Result<String, FloatError> {
    let a = parse_float(stored).ok_or(FloatError::Stored)?;
    let b = parse_float(increment).ok_or(FloatError::Increment)?;
    let sum = a + b;
    if !a.is_finite() || !b.is_finite() || !sum.is_finite() {
        return Err(FloatError::NotFinite);
    }
    if let Some(exact) = Decimal::parse(stored).zip(Decimal::parse(increment)).and_then(|(a, b)| a.add(b)) {
        if let Some(text) = exact.to_fixed() {
            return Ok(text);
        }
    }
    Ok(trim(format!("{sum:.17}")))
}

/// The number a text is, as Redis's `INCRBYFLOAT` and `HINCRBYFLOAT` read it (`strtold` with no
/// spaces and nothing after the number): `inf` is a number, `nan` is not. Front ends check an
/// increment with it where Redis checks it before looking at the key.
pub fn parse_float(text: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(text).ok()?;
    text.parse::<f64>().ok().filter(|f| !f.is_nan())
}

/// `mantissa × 10^exponent`, exactly as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decimal {
    mantissa: i128,
    exponent: i32,
}

impl Decimal {
    /// `[+-]digits[.digits][(e|E)[+-]digits]`, when the digits fit in an `i128` and the
    /// exponent is reasonable; `None` otherwise (the caller falls back to `f64`).
    fn parse(text: &[u8]) -> Option<Decimal> {
        let (negative, text) = match text.split_first()? {
            (b'-', rest) => (true, rest),
            (b'+', rest) => (false, rest),
            _ => (false, text),
        };
        let (number, exponent) = match text.iter().position(|&b| b == b'e' || b == b'E') {
            Some(at) => (&text[..at], Some(&text[at + 1..])),
            None => (text, None),
        };
        let (whole, fraction) = match number.iter().position(|&b| b == b'.') {
            Some(at) => (&number[..at], &number[at + 1..]),
            None => (number, &[][..]),
        };
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let mut mantissa: i128 = 0;
        for &digit in whole.iter().chain(fraction) {
            if !digit.is_ascii_digit() {
                return None;
            }
            mantissa = mantissa.checked_mul(10)?.checked_add(i128::from(digit - b'0'))?;
        }
        let written: i32 = match exponent {
            None => 0,
            Some(exponent) => {
                let text = std::str::from_utf8(exponent).ok()?;
                if !text.trim_start_matches(['+', '-']).bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                text.parse::<i32>().ok().filter(|e| e.abs() <= 1000)?
            }
        };
        let exponent = written - i32::try_from(fraction.len()).ok()?;
        Some(Decimal { mantissa: if negative { -mantissa } else { mantissa }, exponent })
    }

    /// The exact sum, if it fits.
    fn add(self, other: Decimal) -> Option<Decimal> {
        let exponent = self.exponent.min(other.exponent);
        let scale = |d: Decimal| d.mantissa.checked_mul(pow10(d.exponent - exponent)?);
        Some(Decimal { mantissa: scale(self)?.checked_add(scale(other)?)?, exponent })
    }

    /// Fixed point with at most [`DECIMALS`] digits after the point, rounded half to even,
    /// trailing zeros dropped; `None` if it does not fit.
    fn to_fixed(self) -> Option<String> {
        let Decimal { mut mantissa, mut exponent } = self;
        if exponent < -DECIMALS {
            let drop = -DECIMALS - exponent;
            mantissa = match pow10(drop) {
                Some(divisor) => round_half_even(mantissa, divisor),
                // More digits dropped than an i128 holds: the value is below 10^-17 / 2.
                None => 0,
            };
            exponent = -DECIMALS;
        }
        if exponent >= 0 {
            let whole = mantissa.checked_mul(pow10(exponent)?)?;
            return Some(whole.to_string());
        }
        let digits = mantissa.unsigned_abs().to_string();
        let decimals = usize::try_from(-exponent).ok()?;
        let digits = format!("{digits:0>width$}", width = decimals + 1);
        let (whole, fraction) = digits.split_at(digits.len() - decimals);
        let sign = if mantissa < 0 { "-" } else { "" };
        Some(trim(format!("{sign}{whole}.{fraction}")))
    }
}

fn pow10(exponent: i32) -> Option<i128> {
    10i128.checked_pow(u32::try_from(exponent).ok()?)
}

/// `n / divisor`, rounded to the nearest, ties to even.
fn round_half_even(n: i128, divisor: i128) -> i128 {
    let (quotient, remainder) = (n / divisor, n % divisor);
    let twice = remainder.unsigned_abs() * 2;
    let away = match twice.cmp(&divisor.unsigned_abs()) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal => quotient % 2 != 0,
        std::cmp::Ordering::Less => false,
    };
    if !away {
        quotient
    } else if n < 0 {
        quotient - 1
    } else {
        quotient + 1
    }
}

/// Drops trailing zeros after the point (and the point), and the sign of a zero.
fn trim(text: String) -> String {
    let trimmed = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.') } else { &text };
    if trimmed == "-0" { "0".to_owned() } else { trimmed.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::{FloatError, add, parse_float};

    fn sum(a: &str, b: &str) -> String {
        add(a.as_bytes(), b.as_bytes()).unwrap()
    }

    #[test]
    fn sums_are_written_as_redis_writes_them() {
        assert_eq!(sum("10.50", "0.1"), "10.6");
        assert_eq!(sum("0.1", "0.2"), "0.3");
        assert_eq!(sum("5.0e3", "0"), "5000");
        assert_eq!(sum("5.0e3", "2.0e2"), "5200");
        assert_eq!(sum("3", "0"), "3");
        assert_eq!(sum("1", "-1"), "0");
        assert_eq!(sum("-0.5", "0.25"), "-0.25");
        assert_eq!(sum("0", "-0"), "0");
        assert_eq!(sum("1e-18", "0"), "0", "below the 17th decimal");
        assert_eq!(sum("6e-18", "0"), "0.00000000000000001");
        assert_eq!(sum("5e-18", "0"), "0", "a tie goes to the even digit");
        assert_eq!(sum("+.5", "5."), "5.5");
        assert_eq!(sum("1E+2", "1e-2"), "100.01");
    }

    #[test]
    fn numbers_too_long_for_exact_sums_still_add() {
        let big = "1".repeat(40);
        assert_eq!(sum(&big, "0"), format!("{:.0}", big.parse::<f64>().unwrap()));
        assert_eq!(sum("1e300", "1"), format!("{:.0}", 1e300_f64));
    }

    #[test]
    fn what_is_not_a_number_or_not_finite() {
        assert_eq!(add(b"abc", b"1"), Err(FloatError::Stored));
        assert_eq!(add(b"1", b"x"), Err(FloatError::Increment));
        assert_eq!(add(b"1", b" 1"), Err(FloatError::Increment));
        assert_eq!(add(b"1", b"nan"), Err(FloatError::Increment));
        assert_eq!(add(b"1", b"inf"), Err(FloatError::NotFinite));
        assert_eq!(add(b"1e308", b"1e308"), Err(FloatError::NotFinite));
        assert_eq!(parse_float(b"-1.5e3"), Some(-1500.0));
        assert_eq!(parse_float(b"inf"), Some(f64::INFINITY));
        assert!(parse_float(b"").is_none() && parse_float(b"1e").is_none() && parse_float(b"NaN").is_none());
    }
}
