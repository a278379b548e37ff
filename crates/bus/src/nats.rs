//! NATS engine (stub — implemented by the bus issue work).
use std::time::Duration;

use bytes::Bytes;

use crate::{ConsumerConfig, Delivery, Message, Result, StreamConfig, Subscription};

#[derive(Clone)]
pub(crate) struct NatsBus {
    #[allow(dead_code)]
    client: async_nats::Client,
}

pub(crate) struct NatsConsumer {}

impl NatsBus {
    pub(crate) async fn connect(_url: &str) -> Result<Self> {
        todo!()
    }
    pub(crate) async fn publish(&self, _subject: &str, _payload: Bytes) -> Result<()> {
        todo!()
    }
    pub(crate) async fn subscribe(
        &self,
        _subject: &str,
        _group: Option<&str>,
    ) -> Result<Subscription> {
        todo!()
    }
    pub(crate) async fn request(&self, _s: &str, _p: Bytes, _t: Duration) -> Result<Bytes> {
        todo!()
    }
    pub(crate) async fn ensure_stream(&self, _cfg: &StreamConfig) -> Result<()> {
        todo!()
    }
    pub(crate) async fn publish_durable(
        &self,
        _s: &str,
        _p: Bytes,
        _id: Option<&str>,
    ) -> Result<u64> {
        todo!()
    }
    pub(crate) async fn publish_durable_batch(
        &self,
        _m: Vec<(String, Bytes, Option<String>)>,
    ) -> Result<()> {
        todo!()
    }
    pub(crate) async fn consumer(
        &self,
        _stream: &str,
        _cfg: &ConsumerConfig,
    ) -> Result<NatsConsumer> {
        todo!()
    }
}

impl NatsConsumer {
    pub(crate) async fn fetch(&mut self, _max: usize, _wait: Duration) -> Result<Vec<Delivery>> {
        todo!()
    }
}

pub(crate) async fn next_message(_sub: &mut async_nats::Subscriber) -> Option<Message> {
    todo!()
}

pub(crate) async fn respond(
    _c: &async_nats::Client,
    _s: async_nats::Subject,
    _p: Bytes,
) -> Result<()> {
    todo!()
}

pub(crate) async fn ack(_m: &async_nats::jetstream::Message) -> Result<()> {
    todo!()
}

pub(crate) async fn nak(_m: &async_nats::jetstream::Message, _d: Duration) -> Result<()> {
    todo!()
}
