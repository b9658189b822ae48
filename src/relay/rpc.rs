//! The few `google.rpc` messages OTLP uses for errors, shared by the receivers (which answer
//! with them) and the forwarder (which reads an upstream's): `Status`, the error body of
//! OTLP/HTTP and gRPC's `grpc-status-details-bin`, and `RetryInfo`, the delay a sender should
//! wait before retrying. One definition keeps both sides of the relay reading the same wire.

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use std::time::Duration;

/// The type URL that marks a `google.rpc.RetryInfo` inside `Status.details`.
const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RpcStatus {
    /// A `google.rpc.Code` (the gRPC status code).
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// For the person reading it.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details, such as a [`RetryInfo`].
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProtoAny {
    /// Names the encoded message's type.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The encoded message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RetryInfo {
    /// How long to wait before retrying.
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProtoDuration {
    /// Whole seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// The fraction, in nanoseconds.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// An encoded `google.rpc.Status` with `code` and `message` that asks the sender to retry
/// after `delay` (a `RetryInfo` detail).
pub(crate) fn status_with_retry(code: i32, message: &str, delay: Duration) -> Vec<u8> {
    let retry = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(delay.subsec_nanos()).unwrap_or(0),
        }),
    };
    RpcStatus {
        code,
        message: message.to_owned(),
        details: vec![ProtoAny {
            type_url: RETRY_INFO_TYPE.into(),
            value: retry.encode_to_vec(),
        }],
    }
    .encode_to_vec()
}

/// The delay of a `RetryInfo` inside an encoded `google.rpc.Status`, if it carries one.
pub(crate) fn retry_delay(status: &[u8]) -> Option<Duration> {
    let status = RpcStatus::decode(status).ok()?;
    let any = status
        .details
        .iter()
        .find(|a| a.type_url.ends_with("/google.rpc.RetryInfo"))?;
    let delay = RetryInfo::decode(any.value.as_slice()).ok()?.retry_delay?;
    let secs = u64::try_from(delay.seconds.max(0)).unwrap_or(0);
    let nanos = u32::try_from(delay.nanos.max(0)).unwrap_or(0);
    Some(Duration::new(secs, nanos))
}

/// A gRPC codec passing message bytes through untouched: the receiver decodes them itself (so
/// a bad body is `InvalidArgument`), and the forwarder sends the encoding made at accept.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_delay_written_by_the_receiver_is_read_by_the_forwarder() {
        let encoded = status_with_retry(14, "busy", Duration::from_millis(3500));
        assert_eq!(retry_delay(&encoded), Some(Duration::from_millis(3500)));
        let status = RpcStatus::decode(encoded.as_slice()).expect("decodes");
        assert_eq!((status.code, status.message.as_str()), (14, "busy"));
        assert_eq!(retry_delay(b""), None);
    }
}
