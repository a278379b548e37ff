//! The protobuf codec of every presence RPC: prost with small per-stream buffers.
//!
//! tonic's default codec gives every stream an 8 KiB encode and an 8 KiB decode buffer. Pings
//! and Pongs are a few bytes, and a gateway holds one stream per client, so at 18,000 clients
//! the defaults alone would be ~290 MB. The buffers still grow on demand for larger messages
//! (report batches, reflection answers).
use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial encode/decode buffer per stream.
const BUFFER: usize = 256;
/// Encoded bytes after which a streaming encoder yields (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER`]-byte initial buffers.
#[derive(Debug, Clone, Default)]
pub struct SmallCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Codec for SmallCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }
}
