//! OTLP receivers: gRPC (what claude uses) and HTTP (protobuf and JSON, for other senders).
//! Both decode, answer protocol errors properly, and hand decoded requests to the [`Intake`].
//!
//! [`Intake`]: super::Intake

pub mod bounds;
pub mod grpc;
pub mod http;
pub mod otlp_json;
