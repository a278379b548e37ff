//! One snapshot of the process, a JSON document with a section per service. A section is
//! `null` when that service does not run in this process (no metric and no status of it), so
//! the page shows what is reachable: everything under `switchboard demo`, one role's part in
//! distributed mode.
use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::exposition::Exposition;

/// How much presence history the chart shows.
const HISTORY: Duration = Duration::from_secs(5 * 60);

/// Builds snapshots; keeps what needs more than one sample (rates, the online-users history).
pub(crate) struct Sampler {
    started: Instant,
    seq: u64,
    /// The previous sample's time and counters, for per-second rates.
    previous: Option<(Instant, Counters)>,
    /// (Unix ms, online users), oldest first.
    online: VecDeque<(u64, f64)>,
}

#[derive(Clone, Copy, Default)]
struct Counters {
    jobs: f64,
    events: f64,
}

impl Sampler {
    pub(crate) fn new() -> Self {
        Self { started: Instant::now(), seq: 0, previous: None, online: VecDeque::new() }
    }

    /// The next snapshot, from `metrics` (Prometheus text), `status` (the registry) and the
    /// job check's state.
    pub(crate) fn sample(
        &mut self,
        metrics: &str,
        status: &Map<String, Value>,
        check: Value,
    ) -> Value {
        let m = Exposition::parse(metrics);
        let now = Instant::now();
        let now_ms = unix_ms();
        self.seq += 1;
        let counters = Counters {
            jobs: m.sum("jobproxy_requests_total").unwrap_or(0.0),
            events: m.sum("tracker_collector_events_accepted_total").unwrap_or(0.0),
        };
        let rate = |f: fn(&Counters) -> f64| match self.previous {
            Some((t, c)) => {
                let secs = now.duration_since(t).as_secs_f64().max(1e-3);
                ((f(&counters) - f(&c)) / secs).max(0.0)
            }
            None => 0.0,
        };
        let (jobs_per_s, events_per_s) = (rate(|c| c.jobs), rate(|c| c.events));
        self.previous = Some((now, counters));
        let online = m.sum("presence_status_online_users");
        if let Some(n) = online {
            self.online.push_back((now_ms, n));
        }
        let horizon = now_ms.saturating_sub(u64::try_from(HISTORY.as_millis()).unwrap_or(0));
        while self.online.front().is_some_and(|(t, _)| *t < horizon) {
            self.online.pop_front();
        }
        let s = |name: &str| status.get(name).cloned().unwrap_or(Value::Null);
        let ms = |name: &str, q: &str| m.quantile(name, q).map(|v| v * 1000.0);

        let aggregator =
            present(&m, status, &["aggregator", "aggregator.check"], &["aggregator_connected"])
                .then(|| {
                    json!({
                        "connected": m.sum("aggregator_connected"),
                        "reports_sent": m.sum("aggregator_reports_sent_total"),
                        "last_report": s("aggregator"),
                        "check": s("aggregator.check"),
                        "simulator_messages_sent": m.sum("wsserver_messages_sent_total"),
                    })
                });
        let presence_metrics = ["presence_status_online_users", "presence_gateway_sessions"];
        let presence = present(&m, status, &["presence"], &presence_metrics).then(|| {
            let history: Vec<_> = self.online.iter().map(|(t, n)| json!([t, n])).collect();
            json!({
                "online": online,
                "history": history,
                "gateway_sessions": m.sum("presence_gateway_sessions"),
                "clients_connected": m.sum("presence_clients_connected"),
                "pings": m.sum("presence_gateway_pings_total"),
                "pongs": m.sum("presence_gateway_pongs_total"),
                "info": s("presence"),
            })
        });
        let jobproxy = present(
            &m,
            status,
            &["jobproxy"],
            &["jobproxy_held_requests", "jobproxy_requests_total"],
        )
        .then(|| {
            json!({
                "requests": m.sum("jobproxy_requests_total"),
                "jobs_per_s": jobs_per_s,
                "held": m.sum("jobproxy_held_requests"),
                "held_p50_ms": ms("jobproxy_held_seconds", "0.5"),
                "held_p99_ms": ms("jobproxy_held_seconds", "0.99"),
                "upstream_start_p50_ms": ms("jobproxy_upstream_start_seconds", "0.5"),
                "upstream_start_p99_ms": ms("jobproxy_upstream_start_seconds", "0.99"),
                "info": s("jobproxy"),
                "check": check,
            })
        });
        let control =
            present(&m, status, &["control"], &["control_server_agents_attached"]).then(|| {
                json!({
                    "attached": m.sum("control_server_agents_attached"),
                    "commands": m.sum("control_server_commands_total"),
                    "agents": s("control").get("agents").cloned().unwrap_or(Value::Null),
                })
            });
        let tracker =
            present(&m, status, &["tracker"], &["tracker_collector_events_accepted_total"]).then(
                || {
                    json!({
                        "events_accepted": m.sum("tracker_collector_events_accepted_total"),
                        "events_per_s": events_per_s,
                        "events_folded": m.sum("tracker_worker_events_total"),
                        "info": s("tracker"),
                    })
                },
            );
        json!({
            "seq": self.seq,
            "time_ms": now_ms,
            "uptime_s": self.started.elapsed().as_secs(),
            "aggregator": aggregator,
            "presence": presence,
            "jobproxy": jobproxy,
            "control": control,
            "tracker": tracker,
        })
    }
}

/// Whether a service shows in this process: one of its status entries or its metric exists.
fn present(m: &Exposition, status: &Map<String, Value>, names: &[&str], metrics: &[&str]) -> bool {
    names.iter().any(|n| status.contains_key(*n)) || metrics.iter().any(|n| m.sum(n).is_some())
}

fn unix_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_appear_with_their_service_and_rates_need_two_samples() {
        let mut s = Sampler::new();
        let status = Map::new();
        let first = s.sample("jobproxy_requests_total{outcome=\"ok\"} 10\n", &status, Value::Null);
        assert_eq!(first["seq"], 1);
        assert!(first["aggregator"].is_null(), "no aggregator runs here");
        assert_eq!(first["jobproxy"]["requests"], 10.0);
        assert_eq!(first["jobproxy"]["jobs_per_s"], 0.0, "no rate from one sample");

        let mut status = Map::new();
        status.insert("tracker".into(), json!({"dashboard": "http://x/dashboard"}));
        let text = "jobproxy_requests_total{outcome=\"ok\"} 20\npresence_status_online_users 7\n";
        let second = s.sample(text, &status, Value::Null);
        assert_eq!(second["seq"], 2);
        assert!(second["jobproxy"]["jobs_per_s"].as_f64().unwrap() > 0.0);
        assert_eq!(second["tracker"]["info"]["dashboard"], "http://x/dashboard");
        assert_eq!(second["presence"]["online"], 7.0);
        assert_eq!(second["presence"]["history"].as_array().unwrap().len(), 1);
    }
}
