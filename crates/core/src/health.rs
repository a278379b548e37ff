//! Liveness and readiness.
//!
//! Liveness (`/healthz`) is "the process answers". Readiness (`/readyz`) is "at least one
//! component registered, every component that registered has said it is ready, and shutdown
//! has not begun" — load balancers stop sending traffic as soon as draining starts. A process
//! whose role has not registered anything yet (still starting) is not ready.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Shared readiness state. Cheap to clone.
#[derive(Clone, Default)]
pub struct Health {
    // A std Mutex: held for a map lookup only, never across an await.
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    components: BTreeMap<String, bool>,
    draining: bool,
}

impl Health {
    /// A fresh health state with no components (not ready until a component is ready).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `component` as not ready yet.
    pub fn register(&self, component: &str) {
        self.lock().components.insert(component.to_owned(), false);
    }

    /// Marks `component` ready (registers it if needed).
    pub fn set_ready(&self, component: &str, ready: bool) {
        self.lock().components.insert(component.to_owned(), ready);
    }

    /// Flips readiness off for good: shutdown has started.
    pub fn start_draining(&self) {
        self.lock().draining = true;
    }

    /// Whether every registered component is ready and we are not draining.
    pub fn is_ready(&self) -> bool {
        let s = self.lock();
        !s.draining && !s.components.is_empty() && s.components.values().all(|r| *r)
    }

    /// Per-component view for the `/readyz` body.
    pub fn report(&self) -> serde_json::Value {
        let s = self.lock();
        serde_json::json!({
            "ready": !s.draining && s.components.values().all(|r| *r),
            "draining": s.draining,
            "components": s.components,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the map itself is always consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_requires_all_components_and_no_drain() {
        let h = Health::new();
        assert!(!h.is_ready(), "nothing registered yet: still starting");
        h.register("a");
        assert!(!h.is_ready());
        h.set_ready("a", true);
        assert!(h.is_ready());
        h.start_draining();
        assert!(!h.is_ready());
        assert_eq!(h.report()["draining"], true);
    }
}
