//! Ingest: turning a raw `herald.events` record into an [`EventEnvelope`](crate::model::records::EventEnvelope),
//! or into a reason it cannot be one (the record then goes to the dead-letter topic).

pub mod avro;
pub mod cloudevents;
pub mod confluent;
pub mod decode;

pub use avro::WriterSchemaError;
pub use decode::{DecodeError, Decoder, DecoderSetupError, RawRecord, decode, headers_of};
