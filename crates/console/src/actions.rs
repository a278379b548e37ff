//! `POST /console/jobcheck`: runs the jobproxy's 50-job check (a function the binary passes
//! in, so this crate depends on no service). One check at a time — a second request while one
//! runs gets 409 — so the page cannot be used to flood the proxy. The check runs in its own
//! task: a requester that goes away does not cut it short, and its result still reaches every
//! open page through the snapshots.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use serde_json::{Value, json};

/// Runs the check; `Ok` carries its result as JSON, `Err` why it could not run.
pub type JobCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<Value, String>> + Send + Sync>;

/// Wraps an async function as a [`JobCheck`].
pub fn job_check<F, Fut>(f: F) -> JobCheck
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, String>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

/// The job check and what is known of it.
pub(crate) struct Actions {
    jobcheck: Option<JobCheck>,
    running: AtomicBool,
    // A std Mutex: only ever held to clone or replace the value.
    last: Mutex<Option<Value>>,
}

/// Clears `running` when the check ends, however it ends.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Actions {
    pub(crate) fn new(jobcheck: Option<JobCheck>) -> Self {
        Self { jobcheck, running: AtomicBool::new(false), last: Mutex::new(None) }
    }

    /// For the snapshot: whether a check can run, whether one runs, and the last result.
    pub(crate) fn state(&self) -> Value {
        json!({
            "available": self.jobcheck.is_some(),
            "running": self.running.load(Ordering::Acquire),
            "last": self.last.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        })
    }

    async fn run(self: Arc<Self>, check: JobCheck) -> (StatusCode, Value) {
        let _running = Running(&self.running);
        let (code, body) = match check().await {
            Ok(result) => (StatusCode::OK, result),
            Err(why) => (StatusCode::BAD_GATEWAY, json!({ "error": why })),
        };
        let finished_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut recorded = body.clone();
        if let Some(o) = recorded.as_object_mut() {
            o.insert("finished_ms".into(), json!(finished_ms));
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(recorded);
        (code, body)
    }
}

/// `POST /console/jobcheck`: 200 with the result, 409 while a check runs, 404 when this
/// process has no check, 502 when the check could not run (e.g. no proxy here).
pub(crate) async fn jobcheck(State(state): State<crate::State>) -> Response {
    let actions = state.actions;
    let Some(check) = actions.jobcheck.clone() else {
        let body = json!({ "error": "no job check in this process" });
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    };
    if actions.running.swap(true, Ordering::AcqRel) {
        let body = json!({ "error": "a job check is already running" });
        return (StatusCode::CONFLICT, Json(body)).into_response();
    }
    match tokio::spawn(actions.run(check)).await {
        Ok((code, body)) => (code, Json(body)).into_response(),
        Err(e) => {
            tracing::error!(error = %switchboard_core::describe_error(&e), "job check task failed");
            let body = json!({ "error": "the job check failed" });
            (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn one_check_at_a_time_and_its_result_is_kept() {
        let (started_tx, mut started) = tokio::sync::watch::channel(false);
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let check: JobCheck = Arc::new(move || {
            started_tx.send_replace(true);
            let mut release = release_rx.clone();
            Box::pin(async move {
                let _ = release.wait_for(|go| *go).await;
                Ok(json!({"jobs": 50, "succeeded": 50, "passed": true}))
            })
        });
        let stop = switchboard_core::CancellationToken::new();
        let app = crate::router(crate::Options { jobcheck: Some(check) }, stop.clone());
        let post = || Request::post("/console/jobcheck").body(Body::empty()).unwrap();
        let first = tokio::spawn(app.clone().oneshot(post()));
        started.wait_for(|s| *s).await.unwrap();
        let busy = app.clone().oneshot(post()).await.unwrap();
        assert_eq!(busy.status(), StatusCode::CONFLICT, "a second check while one runs");

        release_tx.send_replace(true);
        let res = first.await.unwrap().unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["succeeded"], 50);
        stop.cancel();
    }

    #[tokio::test]
    async fn without_a_check_the_action_is_absent() {
        let stop = switchboard_core::CancellationToken::new();
        let app = crate::router(crate::Options::default(), stop.clone());
        let req = Request::post("/console/jobcheck").body(Body::empty()).unwrap();
        assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::NOT_FOUND);
        stop.cancel();
    }
}
