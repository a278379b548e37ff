//! The sampler — one task building a snapshot every second — and the handlers that serve it:
//! `GET /console/events` (server-sent events, one `snapshot` message per second, the current
//! one first) and `GET /console/snapshot` (the current one as JSON).
//!
//! One sampler per process however many pages are open: each stream only clones the latest
//! serialised snapshot out of a watch channel.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt as _};
use switchboard_core::CancellationToken;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::WatchStream;

use crate::actions::Actions;
use crate::snapshot::Sampler;

/// How often a snapshot is taken and sent.
pub(crate) const PERIOD: Duration = Duration::from_secs(1);

/// Starts the sampler; it stops when `stop` is cancelled, which ends every open stream.
pub(crate) fn spawn_sampler(
    actions: Arc<Actions>,
    stop: CancellationToken,
) -> watch::Receiver<Arc<str>> {
    let mut sampler = Sampler::new();
    let take = move |sampler: &mut Sampler| -> Arc<str> {
        let metrics = switchboard_core::telemetry::prometheus().render();
        let status = switchboard_core::status::all();
        sampler.sample(&metrics, &status, actions.state()).to_string().into()
    };
    let (tx, rx) = watch::channel(take(&mut sampler));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            tx.send_replace(take(&mut sampler));
        }
    });
    rx
}

/// `GET /console/events`: the current snapshot at once, then each new one.
pub(crate) async fn stream(
    State(state): State<crate::State>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let snapshots = WatchStream::new(state.latest)
        .map(|json| Ok(Event::default().event("snapshot").data(&*json)));
    Sse::new(snapshots).keep_alive(KeepAlive::default())
}

/// `GET /console/snapshot`: the current snapshot.
pub(crate) async fn current(State(state): State<crate::State>) -> impl IntoResponse {
    let json = state.latest.borrow().to_string();
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], json)
}
