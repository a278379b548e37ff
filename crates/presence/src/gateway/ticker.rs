//! The one ping timer of a gateway: a single task drives every session's Ping.
//!
//! Sessions are spread over `slots` phases of the ping interval (slot = client id mod slots),
//! and the ticker fires one slot every `interval / slots`. So there is no timer or thread per
//! client, and the gateway writes 1/slots of its Pings at a time instead of all of them in one
//! burst each second — a burst of 18,000 writes on two cores is what turns into ping jitter.
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Hands out per-slot tick receivers; [`Ticker::run`] drives them.
#[derive(Debug)]
pub struct Ticker {
    slots: Vec<watch::Sender<u64>>,
    interval: Duration,
}

impl Ticker {
    /// A ticker firing each of `slots` phases once per `interval`.
    pub fn new(interval: Duration, slots: usize) -> Self {
        let slots = (0..slots.max(1)).map(|_| watch::channel(0).0).collect();
        Self { slots, interval }
    }

    /// The tick receiver for `client`; it changes once per interval.
    pub fn subscribe(&self, client: u128) -> watch::Receiver<u64> {
        let n = u128::try_from(self.slots.len()).unwrap_or(1);
        let i = usize::try_from(client % n).unwrap_or(0);
        self.slots[i].subscribe()
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
