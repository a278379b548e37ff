//! Summary statistics shared by the benchmark programs.
use std::time::Duration;

/// The `q`-quantile (0..=1) of `sorted` by nearest rank; zero for no samples.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let Some(last) = sorted.len().checked_sub(1) else { return Duration::ZERO };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let i = (last as f64 * q).round() as usize;
    sorted[i.min(last)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_from_the_sorted_values() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(51));
        assert_eq!(quantile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}
