//! Injected faults of the job-server simulator, each a probability in `[0, 1]`, so tests and
//! demos can exercise every failure path of the proxy (1.0 makes a fault certain).
use std::time::Duration;

/// Fault injection flags of `switchboard sim jobserver`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Faults {
    /// Share of `/start` requests answered with HTTP 500.
    #[arg(long, env = "SWITCHBOARD_FAIL_START_RATE", default_value_t = 0.0, value_parser = rate)]
    pub fail_start_rate: f64,

    /// Share of callbacks sent `--slow-callback-delay` late.
    #[arg(long, env = "SWITCHBOARD_SLOW_CALLBACK_RATE", default_value_t = 0.0, value_parser = rate)]
    pub slow_callback_rate: f64,

    /// Extra delay of a slow callback.
    #[arg(long, env = "SWITCHBOARD_SLOW_CALLBACK_DELAY", default_value = "3s", value_parser = humantime::parse_duration)]
    pub slow_callback_delay: Duration,

    /// Share of jobs that fail: their report says `"state":"failed"` and has no proof.
    #[arg(long, env = "SWITCHBOARD_FAILED_JOB_RATE", default_value_t = 0.0, value_parser = rate)]
    pub failed_job_rate: f64,

    /// Share of callbacks never sent.
    #[arg(long, env = "SWITCHBOARD_MISSING_CALLBACK_RATE", default_value_t = 0.0, value_parser = rate)]
    pub missing_callback_rate: f64,

    /// Share of callbacks sent twice.
    #[arg(long, env = "SWITCHBOARD_DUPLICATE_CALLBACK_RATE", default_value_t = 0.0, value_parser = rate)]
    pub duplicate_callback_rate: f64,

    /// Share of asynchronous jobs whose callback is delivered *before* the start response
    /// (the job runs inline, then `/start` answers): the race a proxy must survive.
    #[arg(long, env = "SWITCHBOARD_EARLY_CALLBACK_RATE", default_value_t = 0.0, value_parser = rate)]
    pub early_callback_rate: f64,
}

/// `true` with probability `rate`.
pub(crate) fn roll(rate: f64) -> bool {
    rate > 0.0 && rand::random::<f64>() < rate
}

fn rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|e| format!("{s:?} is not a number: {e}"))?;
    if (0.0..=1.0).contains(&r) { Ok(r) } else { Err(format!("{r} is not within [0, 1]")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_probabilities() {
        assert_eq!(rate("0.25"), Ok(0.25));
        assert!(rate("1.5").is_err());
        assert!(rate("-0.1").is_err());
        assert!(rate("x").is_err());
        assert!(!roll(0.0));
        assert!(roll(1.0));
    }
}
