//! `switchboard jobclient`: fires N synchronous jobs at once at a URL (the proxy) and passes
//! only if every one comes back `completed` with a valid proof within the deadline.
//! Shows a progress bar while running (on a terminal), then a summary and `RESULT:`.
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use switchboard_core::Ctx;
use tokio::task::JoinSet;

use crate::job::ReportHead;
use crate::{Error, Result};

/// `switchboard jobclient` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct JobClientArgs {
    /// URL the jobs are POSTed to (the proxy's URL; its root and `/start` both work).
    #[arg(long, env = "SWITCHBOARD_URL")]
    pub url: String,

    /// Account the jobs run for.
    #[arg(long, env = "SWITCHBOARD_ACCOUNT", default_value = "demo")]
    pub account: String,

    /// Number of jobs, all started at once.
    #[arg(long, env = "SWITCHBOARD_JOBS", default_value_t = 50)]
    pub jobs: usize,

    /// Every job must have succeeded within this time, counted from the first request.
    #[arg(long, env = "SWITCHBOARD_DEADLINE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
}

/// Outcome of one round of jobs.
#[derive(Debug, Clone)]
pub(crate) struct Round {
    pub jobs: usize,
    pub succeeded: usize,
    /// Per successful job, from its request to its answer.
    pub durations: Vec<Duration>,
    /// From the first request to the last answer.
    pub total: Duration,
    /// The first failure, to say why a round failed.
    pub first_failure: Option<String>,
}

impl Round {
    /// Mean duration of the successful jobs.
    pub fn average(&self) -> Duration {
        let n = u32::try_from(self.durations.len()).unwrap_or(u32::MAX).max(1);
        self.durations.iter().sum::<Duration>() / n
    }

    /// All jobs succeeded.
    pub fn passed(&self) -> bool {
        self.jobs > 0 && self.succeeded == self.jobs
    }
}

/// Runs the jobclient; `true` when every job succeeded in time.
///
/// # Errors
/// `--url` is not an http(s) URL, or the HTTP client cannot be built.
pub(crate) async fn run(args: JobClientArgs, ctx: Ctx) -> Result<bool> {
    // `127.0.0.1:8080` would otherwise fail all 50 jobs with "relative URL without a base".
    switchboard_core::url::http("--url", &args.url).map_err(Error::config)?;
    let bar = ProgressBar::new(args.jobs as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} jobs  {elapsed_precise}")
    {
        bar.set_style(style);
    }
    let round = tokio::select! {
        r = fire(&args.url, &args.account, args.jobs, args.deadline, || bar.inc(1)) => r?,
        () = ctx.shutdown.cancelled() => {
            bar.abandon();
            println!("RESULT: FAILED (interrupted)");
            return Ok(false);
        }
    };
    bar.finish_and_clear();
    println!("Succeeded: {}/{}", round.succeeded, round.jobs);
    println!("Average Duration: {:.3}s", round.average().as_secs_f64());
    println!("Total Duration: {:.3}s", round.total.as_secs_f64());
    if let Some(why) = &round.first_failure {
        println!("First failure: {why}");
    }
    let passed = round.passed() && round.total <= args.deadline;
    println!("RESULT: {}", if passed { "PASSED" } else { "FAILED" });
    Ok(passed)
}

/// POSTs `jobs` synchronous jobs at once; `progress` is called as each one ends.
///
/// # Errors
/// The HTTP client cannot be built.
pub(crate) async fn fire(
    url: &str,
    account: &str,
    jobs: usize,
    deadline: Duration,
    progress: impl Fn(),
) -> Result<Round> {
    // One connection per job: a synchronous request occupies its connection until it ends.
    let client = reqwest::Client::builder().timeout(deadline).build()?;
    let body = serde_json::json!({ "account": account, "wait": true }).to_string();
    let began = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..jobs {
        let request = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        set.spawn(async move {
            let t = Instant::now();
            one(request).await.map(|()| t.elapsed())
        });
    }
    let mut round = Round {
        jobs,
        succeeded: 0,
        durations: Vec::new(),
        total: Duration::ZERO,
        first_failure: None,
    };
    while let Some(joined) = set.join_next().await {
        match joined.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(d) => {
                round.succeeded += 1;
                round.durations.push(d);
            }
            Err(why) => {
                round.first_failure.get_or_insert(why);
            }
        }
        progress();
    }
    round.total = began.elapsed();
    Ok(round)
}

async fn one(request: reqwest::RequestBuilder) -> Result<(), String> {
    let res = request.send().await.map_err(|e| format!("request failed: {e}"))?;
    let status = res.status();
    let body = res.bytes().await.map_err(|e| format!("reading the answer: {e}"))?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    let report = ReportHead::parse(&body)?;
    if report.is_completed() {
        Ok(())
    } else {
        Err(format!("job {} ended {:?} without a valid proof", report.id, report.state))
    }
}

/// The jobclient's check as data: `jobs` synchronous jobs at once against `url`, passed when
/// all of them completed within `deadline`. JSON: `{"jobs","succeeded","passed",
/// "average_ms","total_ms","first_failure"}`.
///
/// # Errors
/// `url` is not an http(s) URL, or the HTTP client cannot be built.
pub async fn check(
    url: &str,
    jobs: usize,
    deadline: std::time::Duration,
) -> Result<serde_json::Value> {
    switchboard_core::url::http("url", url).map_err(Error::config)?;
    let round = fire(url, "console", jobs, deadline, || {}).await?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    Ok(serde_json::json!({
        "jobs": round.jobs,
        "succeeded": round.succeeded,
        "passed": round.passed() && round.total <= deadline,
        "average_ms": ms(round.average()),
        "total_ms": ms(round.total),
        "first_failure": round.first_failure,
    }))
}
