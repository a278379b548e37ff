//! Summary statistics shared by the benchmark programs, and their progress lines: a benchmark
//! that measures for a minute says what it is doing meanwhile (on stderr, so stdout keeps only
//! the table and the JSON line).
use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`with_progress`] reports.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Awaits `work`, printing `what` on stderr at once and then the elapsed time (of `expected`,
/// if known) every [`PROGRESS_EVERY`] until it completes.
pub async fn with_progress<F: Future>(
    what: &str,
    expected: Option<Duration>,
    work: F,
) -> F::Output {
    eprintln!("{what}…");
    let started = Instant::now();
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticks.tick() => {
                let done = started.elapsed().as_secs();
                match expected {
                    Some(total) => eprintln!("  {what}: {done} s of {} s", total.as_secs()),
                    None => eprintln!("  {what}: {done} s"),
                }
            }
        }
    }
}

/// The `q`-quantile (0..=1) of `sorted` by nearest rank; zero for no samples.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let Some(last) = sorted.len().checked_sub(1) else { return Duration::ZERO };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let i = (last as f64 * q).round() as usize;
    sorted[i.min(last)]
}

/// Resident set size of process `pid` in bytes, from `/proc` (Linux; `None` elsewhere or for
/// a process that is gone).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU time process `pid` has used, from `/proc` (Linux; `None` elsewhere or
/// for a process that is gone).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, i.e. 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / TICKS_PER_SEC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 1_000_000);
        // Burn CPU until the kernel has accounted some (tick-based accounting on a busy host
        // may take a while); a parser reading the wrong fields would stay at zero.
        let spin = std::time::Instant::now();
        while cpu_time(pid).unwrap() == Duration::ZERO {
            assert!(spin.elapsed() < Duration::from_secs(10), "no CPU time ever accounted");
        }
        assert_eq!((rss_bytes(u32::MAX), cpu_time(u32::MAX)), (None, None));
    }

    #[test]
    fn quantiles_pick_from_the_sorted_values() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(51));
        assert_eq!(quantile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}
