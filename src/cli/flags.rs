//! Parsers for the numeric flags, so that a value out of range is refused
//! before any work starts, with the rule and the words of the `.net` file's
//! `train` section ([`plan::recipe::ranges`]): `--lr -1` and `lr -1` fail
//! alike. Clap prints the message after "invalid value 'V' for '--FLAG'".

use plan::recipe::ranges;

/// `--lr`: a learning rate that can train.
pub fn learning_rate(text: &str) -> Result<f64, String> {
    let lr: f64 = text
        .trim()
        .parse()
        .map_err(|_| "expected a number".to_string())?;
    if ranges::learning_rate(lr) {
        Ok(lr)
    } else {
        Err(format!(
            "learning rate {text} is out of range: must be {}",
            ranges::LEARNING_RATE
        ))
    }
}

/// A count (`--epochs`, `--batch`, `--limit`, `--top`, `--steps`, ...):
/// a whole number of at least 1. Zero is refused rather than clamped or
/// read as "none", which a user could not tell apart from a typo.
pub fn count<T: TryFrom<u64>>(text: &str) -> Result<T, String> {
    let n: u64 = text
        .trim()
        .parse()
        .map_err(|_| "expected a whole number".to_string())?;
    if n == 0 {
        return Err(format!("0 is out of range: must be {}", ranges::COUNT));
    }
    T::try_from(n).map_err(|_| format!("{n} is out of range: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rates_follow_the_train_section() {
        assert_eq!(learning_rate("0.05"), Ok(0.05));
        for bad in ["0", "-0.1", "100", "NaN", "inf", "-inf"] {
            let err = learning_rate(bad).unwrap_err();
            assert!(
                err.contains("must be above 0 and below 100"),
                "{bad}: {err}"
            );
        }
        assert_eq!(learning_rate("fast").unwrap_err(), "expected a number");
    }

    #[test]
    fn counts_start_at_one() {
        assert_eq!(count::<u32>("3"), Ok(3));
        assert!(count::<u32>("0")
            .unwrap_err()
            .contains("must be at least 1"));
        assert!(count::<u32>("5000000000")
            .unwrap_err()
            .contains("too large"));
        assert!(count::<usize>("-1").is_err());
    }
}
