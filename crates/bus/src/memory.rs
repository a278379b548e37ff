//! In-process engine (stub — implemented by the bus issue work).
use std::time::Duration;

use bytes::Bytes;

use crate::{ConsumerConfig, Delivery, Result, StreamConfig, Subscription};

#[derive(Clone, Default)]
pub(crate) struct MemoryBus {}

pub(crate) struct MemoryConsumer {}

pub(crate) struct MemoryAcker {}

impl MemoryBus {
    pub(crate) fn new() -> Self {
        Self {}
    }
    pub(crate) fn publish(&self, _subject: &str, _payload: Bytes) -> Result<()> {
        todo!()
    }
    pub(crate) fn subscribe(&self, _subject: &str, _group: Option<&str>) -> Subscription {
        todo!()
    }
    pub(crate) async fn request(&self, _s: &str, _p: Bytes, _t: Duration) -> Result<Bytes> {
        todo!()
    }
    pub(crate) fn ensure_stream(&self, _cfg: &StreamConfig) -> Result<()> {
        todo!()
    }
    pub(crate) fn publish_durable(&self, _s: &str, _p: Bytes, _id: Option<&str>) -> Result<u64> {
        todo!()
    }
    pub(crate) fn publish_durable_batch(
        &self,
        _m: Vec<(String, Bytes, Option<String>)>,
    ) -> Result<()> {
        todo!()
    }
    pub(crate) fn consumer(&self, _stream: &str, _cfg: &ConsumerConfig) -> Result<MemoryConsumer> {
        todo!()
    }
}

impl MemoryConsumer {
    pub(crate) async fn fetch(&mut self, _max: usize, _wait: Duration) -> Result<Vec<Delivery>> {
        todo!()
    }
}

impl MemoryAcker {
    pub(crate) fn ack(&self) -> Result<()> {
        todo!()
    }
    pub(crate) fn nak(&self, _delay: Duration) -> Result<()> {
        todo!()
    }
}
