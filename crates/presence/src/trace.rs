//! W3C trace context across process boundaries: client → gateway in gRPC metadata, gateway →
//! status inside the bus batch. With `OTEL_EXPORTER_OTLP_ENDPOINT` set (the global propagator is
//! installed by core telemetry) the spans of one client session and of one report batch join
//! into traces; without it these are cheap no-ops.
use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The context of `span` as string pairs (for a bus message).
pub fn inject_map(span: &tracing::Span) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut map));
    map
}

/// Makes `span` a child of the context carried in `map`.
pub fn set_parent_from_map(span: &tracing::Span, map: &HashMap<String, String>) {
    if map.is_empty() {
        return;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(map));
    let _ = span.set_parent(cx);
}

/// Writes the context of `span` into request metadata.
pub fn inject_metadata(span: &tracing::Span, md: &mut MetadataMap) {
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(md))
    });
}

/// Makes `span` a child of the context carried in request metadata.
pub fn set_parent_from_metadata(span: &tracing::Span, md: &MetadataMap) {
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&MetadataExtractor(md)));
    let _ = span.set_parent(cx);
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) =
            (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value))
        {
            self.0.insert(k, v);
        }
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}
