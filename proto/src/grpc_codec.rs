//! The codec of every generated gRPC client and server: prost's encoding,
//! with 1 KiB starting buffers instead of tonic's 8 KiB. Each streaming call
//! keeps one encode and one decode buffer for as long as it is open, and a
//! master holds two long streams per node (heartbeats, the node's pod
//! watch): with 1,000 nodes tonic's default cost 16 MiB of buffers that
//! mostly carry messages of a few hundred bytes (`skiff-bench schedule`,
//! heaptrack). A buffer still grows to the largest message it carries.
//!
//! A streaming call's encoder also takes every message that is ready into
//! its buffer until the buffer holds [`YIELD_THRESHOLD`] bytes, and the
//! buffer keeps what it grew to. At tonic's 32 KiB a burst of changes
//! (every node's Service watch hearing each of many new Services) grew the
//! buffers of 1,000 nodes' watches by 27 MB (`skiff-bench scale`,
//! heaptrack); at 4 KiB a buffer holds at most 4 KiB and the message that
//! passed it, and each write to the connection still carries several small
//! messages.
//!
//! And a message is written into room made for its whole length at once
//! ([`CompactEncoder`]), not into a buffer doubled again and again as it
//! fills: when 1,000 nodes start (or follow a new leader) each lists every
//! Node at the same moment, and the doubling buffers of those answers
//! (each up to twice the answer, and copied at every step) were the
//! largest part of the master's peak heap (`skiff-bench scale`, heaptrack).

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder};

/// Starting size of a call's encode and decode buffers.
pub const BUFFER_BYTES: usize = 1024;
/// A streaming encoder yields to the connection after this many bytes
/// (tonic's default is 32 KiB).
pub const YIELD_THRESHOLD: usize = 4 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

/// [`ProstCodec`] with [`BUFFER_BYTES`] buffers.
#[derive(Debug, Clone)]
pub struct CompactCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for CompactCodec<T, U> {
    fn default() -> Self {
        CompactCodec {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for CompactCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = CompactEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        CompactEncoder { _type: PhantomData }
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

/// prost's encoding, into room reserved for the message's whole length.
#[derive(Debug)]
pub struct CompactEncoder<T> {
    _type: PhantomData<T>,
}

impl<T: prost::Message> Encoder for CompactEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        // The length is known and the room made: what `Message::encode`
        // would check again.
        item.encode_raw(buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        settings()
    }
}
