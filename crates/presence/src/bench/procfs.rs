//! What the bench reads about a child process from `/proc`: resident memory and CPU time.
use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

pub use switchboard_core::stats::rss_bytes;

/// User + system CPU time `pid` has used.
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
        assert_eq!(rss_bytes(u32::MAX), None);
    }
}
