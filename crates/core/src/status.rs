//! A process-wide registry of small read-only JSON snapshots, one per name (`aggregator`,
//! `control`, …), served as `GET /status` on the admin router.
//!
//! Services publish what a metric cannot carry (the last report's call graph, the agents and
//! their last replies, a dashboard URL); readers such as the web console only ever read it.
//! Like the metrics facade it is global, so code deep inside a role can publish without a
//! handle being threaded through.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde_json::Value;

/// Computes a snapshot when read; `None` means the source is gone (the entry is skipped).
type Provider = Arc<dyn Fn() -> Option<Value> + Send + Sync>;

enum Entry {
    Value(Value),
    Provider(Provider),
}

fn registry() -> MutexGuard<'static, BTreeMap<String, Entry>> {
    static REGISTRY: OnceLock<Mutex<BTreeMap<String, Entry>>> = OnceLock::new();
    // A std Mutex: held only to clone or replace an entry, never across an await. Poisoning
    // would only mean a panic during an insert; the map is still consistent.
    REGISTRY.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner())
}

/// Replaces the snapshot published under `name`.
pub fn publish(name: impl Into<String>, value: Value) {
    registry().insert(name.into(), Entry::Value(value));
}

/// Registers `provider`, called on every read of `name`: for state that changes often but is
/// read rarely (a list of attached agents). Replaces whatever `name` held.
pub fn provide(
    name: impl Into<String>,
    provider: impl Fn() -> Option<Value> + Send + Sync + 'static,
) {
    registry().insert(name.into(), Entry::Provider(Arc::new(provider)));
}

/// The snapshot under `name`, if any.
pub fn get(name: &str) -> Option<Value> {
    let entry = match registry().get(name)? {
        Entry::Value(v) => return Some(v.clone()),
        Entry::Provider(p) => Arc::clone(p),
    };
    // Called outside the lock: a provider may take locks of its own.
    entry()
}

/// Every snapshot, by name.
pub fn all() -> serde_json::Map<String, Value> {
    let names: Vec<String> = registry().keys().cloned().collect();
    names.into_iter().filter_map(|n| get(&n).map(|v| (n, v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn published_values_and_providers_are_read_by_name() {
        publish("status-test-value", json!({"n": 1}));
        publish("status-test-value", json!({"n": 2}));
        assert_eq!(get("status-test-value"), Some(json!({"n": 2})), "the last publish wins");

        let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&gone);
        provide("status-test-provider", move || {
            (!flag.load(std::sync::atomic::Ordering::Relaxed)).then(|| json!("live"))
        });
        assert_eq!(all().get("status-test-provider"), Some(&json!("live")));
        gone.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(!all().contains_key("status-test-provider"), "a gone source is skipped");
        assert_eq!(get("no-such-status"), None);
    }
}
