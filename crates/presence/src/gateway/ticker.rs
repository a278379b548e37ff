//! The one ping timer of a gateway: a single task drives every session's Ping.
//!
//! Sessions are spread over `slots` phases of the ping interval (slot = client id mod slots),
//! and the ticker fires one slot every `interval / slots`. So there is no timer or thread per
//! client, and the gateway writes 1/slots of its Pings at a time instead of all of them in one
//! burst each second — a burst of 18,000 writes on two cores is what turns into ping jitter.
//! A connection waits on the next slot one of its streams is in (see [`Ticker::fired`]), so
//! the streams of a multiplexed connection are spread over the second too: h2-based peers
//! (tonic clients, proxies) close a connection on which too many small DATA frames arrive
//! at once.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Hands out per-slot tick receivers; [`Ticker::run`] drives them.
#[derive(Debug)]
pub struct Ticker {
    slots: Vec<watch::Sender<u64>>,
    interval: Duration,
    /// Slots fired so far: fire `f` (from 1) was slot `(f - 1) % slots`.
    fired: AtomicU64,
}

impl Ticker {
    /// A ticker firing each of `slots` phases once per `interval`.
    pub fn new(interval: Duration, slots: usize) -> Self {
        let slots = (0..slots.max(1)).map(|_| watch::channel(0).0).collect();
        Self { slots, interval, fired: AtomicU64::new(0) }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The slot of `client`.
    pub fn slot_of(&self, client: u128) -> usize {
        let n = u128::try_from(self.slots.len()).unwrap_or(1);
        usize::try_from(client % n).unwrap_or(0)
    }

    /// Slots fired so far (incremented before the slot's receivers are woken).
    pub fn fired(&self) -> u64 {
        self.fired.load(Ordering::Acquire)
    }

    /// The tick receiver of `slot`; it changes once per interval.
    pub fn subscribe_slot(&self, slot: usize) -> watch::Receiver<u64> {
        self.slots[slot % self.slots.len()].subscribe()
    }

    /// The tick receiver for `client`'s slot.
    #[cfg(test)]
    pub fn subscribe(&self, client: u128) -> watch::Receiver<u64> {
        self.subscribe_slot(self.slot_of(client))
    }

    /// Fires the slots in turn until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        let n = u32::try_from(self.slots.len()).unwrap_or(1);
        let mut timer = tokio::time::interval(self.interval / n);
        // A late tick is caught up at once (Burst), so every slot keeps its phase: skipping
        // would shift all later slots and turn one stall into jitter for everyone.
        timer.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut i = 0usize;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = timer.tick() => {
                    self.fired.fetch_add(1, Ordering::AcqRel);
                    self.slots[i].send_modify(|t| *t += 1);
                    i = (i + 1) % self.slots.len();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn every_slot_ticks_once_per_interval() {
        let ticker = std::sync::Arc::new(Ticker::new(Duration::from_secs(1), 4));
        let mut rx: Vec<_> = (0..4u128).map(|c| ticker.subscribe(c)).collect();
        let stop = CancellationToken::new();
        let t = ticker.clone();
        let s = stop.clone();
        let task = tokio::spawn(async move { t.run(s).await });
        tokio::time::sleep(Duration::from_millis(3_999)).await;
        stop.cancel();
        task.await.unwrap();
        for r in &mut rx {
            assert_eq!(*r.borrow_and_update(), 4, "4 intervals → 4 ticks per slot");
        }
    }
}
