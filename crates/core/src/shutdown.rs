//! Graceful shutdown: one root [`CancellationToken`], one [`TaskTracker`], one deadline.
//!
//! `main` creates a [`Ctx`], hands clones (or [`Ctx::child`]ren) to every role, waits for
//! [`signal`], cancels, and then [`Ctx::drain`]s: every spawned task gets `grace` to flush
//! windows/batches and return. Roles never install signal handlers themselves, so tests can
//! stop them by cancelling the token.
use std::time::Duration;

pub use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Health;

/// What every role receives: the shutdown token, a tracker for its tasks, and health.
#[derive(Clone, Default)]
pub struct Ctx {
    /// Cancelled when the process (or this role) must stop.
    pub shutdown: CancellationToken,
    /// Every long-lived task is spawned here so `drain` can wait for it.
    pub tasks: TaskTracker,
    /// Readiness shared with the admin server.
    pub health: Health,
}

impl Ctx {
    /// A fresh context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Same tracker and health, but a child token: cancelling it stops only this subtree.
    pub fn child(&self) -> Self {
        Self {
            shutdown: self.shutdown.child_token(),
            tasks: self.tasks.clone(),
            health: self.health.clone(),
        }
    }

    /// Spawns `fut` on the tracker.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(fut)
    }

    /// Starts shutdown: readiness goes 503, the token is cancelled.
    pub fn begin_shutdown(&self) {
        self.health.start_draining();
        self.shutdown.cancel();
    }

    /// Cancels and waits up to `grace` for all tracked tasks. Returns `true` if they all
    /// finished in time.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.begin_shutdown();
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
///
/// # Panics
/// Panics if the signal handlers cannot be installed (only possible outside a tokio runtime).
pub async fn signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.expect("install SIGINT handler");
    };
    #[cfg(unix)]
    let term = async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler")
            .recv()
            .await;
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_tasks_that_watch_the_token() {
        let ctx = Ctx::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let c = ctx.child();
        ctx.spawn(async move {
            c.shutdown.cancelled().await;
            tx.send(()).unwrap();
        });
        assert!(ctx.drain(Duration::from_secs(5)).await);
        rx.await.unwrap();
        assert!(!ctx.health.is_ready());
    }

    #[tokio::test]
    async fn drain_reports_a_task_that_overruns() {
        let ctx = Ctx::new();
        ctx.spawn(std::future::pending::<()>());
        assert!(!ctx.drain(Duration::from_millis(20)).await);
    }
}
