//! Pub/sub and request/reply: [`Message`] and [`Subscription`].
use crate::{Bytes, Result, nats};

/// A message received from a subscription.
pub struct Message {
    /// Subject it was published on.
    pub subject: String,
    /// Body.
    pub payload: Bytes,
    /// Reply handle when the publisher used [`Bus::request`].
    pub(crate) reply: Option<Reply>,
}

pub(crate) enum Reply {
    /// Capacity 1: the first answer wins, as on NATS.
    Memory(tokio::sync::mpsc::Sender<Bytes>),
    Nats {
        client: async_nats::Client,
        subject: async_nats::Subject,
    },
}

/// A stream of [`Message`]s; dropping it unsubscribes.
pub struct Subscription {
    pub(crate) inner: SubscriptionInner,
}

pub(crate) enum SubscriptionInner {
    Memory(tokio::sync::mpsc::Receiver<Message>),
    Nats(nats::NatsSubscription),
}

impl Subscription {
    /// The next message; `None` once the bus is closed.
    pub async fn next(&mut self) -> Option<Message> {
        match &mut self.inner {
            SubscriptionInner::Memory(rx) => rx.recv().await,
            SubscriptionInner::Nats(sub) => sub.next().await,
        }
    }
}

impl Message {
    /// Answers a request. A message without a reply handle is ignored.
    ///
    /// # Errors
    /// The connection is closed.
    pub async fn respond(self, payload: Bytes) -> Result<()> {
        match self.reply {
            None => Ok(()),
            Some(Reply::Memory(tx)) => {
                let _ = tx.try_send(payload); // the requester may have timed out or been answered
                Ok(())
            }
            Some(Reply::Nats { client, subject }) => nats::respond(&client, subject, payload).await,
        }
    }

    /// Whether the sender waits for [`Message::respond`].
    pub fn expects_reply(&self) -> bool {
        self.reply.is_some()
    }
}
