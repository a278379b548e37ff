//! What the aggregator and its simulator publish to [`switchboard_core::status`] for read-only
//! viewers (the web console): the call graph of the last report sent and the simulator's
//! verdicts. Published once per window, so parsing the report back costs nothing that matters.
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

/// Edges kept in the snapshot: the heaviest ones; a drawing of thousands helps nobody.
const MAX_EDGES: usize = 60;

#[derive(serde::Deserialize)]
struct Edge {
    source: String,
    destination: String,
    count: u64,
}

/// Records that the report of `window` (start, Unix ms) was written to the socket.
pub(crate) fn report_sent(window: i64, text: &str) {
    static SENT: AtomicU64 = AtomicU64::new(0);
    let sent = SENT.fetch_add(1, Ordering::Relaxed) + 1;
    let mut edges: Vec<Edge> = serde_json::from_str(text).unwrap_or_default();
    let calls: u64 = edges.iter().map(|e| e.count).sum();
    let total = edges.len();
    edges.sort_unstable_by_key(|e| std::cmp::Reverse(e.count));
    edges.truncate(MAX_EDGES);
    let edges: Vec<_> = edges
        .iter()
        .map(|e| json!({"source": e.source, "destination": e.destination, "count": e.count}))
        .collect();
    switchboard_core::status::publish(
        "aggregator",
        json!({
            "windows_sent": sent,
            "last_window_ms": window,
            "calls": calls,
            "edges_total": total,
            "edges": edges,
        }),
    );
}

/// The simulator's tally after a verdict (`match`, `mismatch`, `unattributed`, `invalid`) on
/// the report of `window` (start, Unix ms; unknown for an invalid report).
pub(crate) fn report_checked(verdict: &str, window: Option<i64>, tally: [u64; 3]) {
    let [matched, mismatched, unattributed] = tally;
    switchboard_core::status::publish(
        "aggregator.check",
        json!({
            "last_verdict": verdict,
            "last_window_ms": window,
            "matched": matched,
            "mismatched": mismatched,
            "unattributed": unattributed,
        }),
    );
}
