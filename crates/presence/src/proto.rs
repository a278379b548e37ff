//! Generated gRPC code for `proto/presence.proto` (package `tenten.interview`) and the encoded
//! descriptor set that backs server reflection, so `grpcurl` works without the .proto file.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("tenten.interview");

/// Encoded `FileDescriptorSet` of `presence.proto`, for tonic-reflection.
pub const DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("presence_descriptor");

impl Status {
    /// The status a client reports at Unix time `now_ms`: EVEN or ODD by its parity.
    pub fn at(now_ms: i64) -> Self {
        if now_ms % 2 == 0 { Self::Even } else { Self::Odd }
    }
}

/// The gRPC reflection service for `presence.proto` (gateway and status both serve it, next to
/// [`reflection_v1alpha`]).
///
/// # Errors
/// The embedded descriptor set does not decode (a build problem).
pub fn reflection() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(DESCRIPTOR_SET)
        .build_v1()
}

/// The same reflection under the older `v1alpha` name, which older grpcurl, Postman and Evans
/// ask for exclusively.
///
/// # Errors
/// The embedded descriptor set does not decode (a build problem).
pub fn reflection_v1alpha() -> Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(DESCRIPTOR_SET)
        .build_v1alpha()
}
