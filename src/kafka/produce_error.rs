//! What a failed produce means: worth producing again, too large to ever be written as it is,
//! or a failure that producing again cannot fix. Herald produces transient failures again until
//! Kafka acknowledges them; a record too large becomes a truncated stub; anything else stops the
//! process, so an orchestrator restarts it instead of it looping forever.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// The class of a produce error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceErrorKind {
    /// The same record may succeed later (queue full, timeout, broker down, leader moving,
    /// topic being created).
    Transient,
    /// The record is larger than the producer or the broker accepts; it never will be.
    TooLarge,
    /// Producing again cannot succeed (fatal idempotent-producer state, an invalid record or
    /// topic, the producer fenced or gone).
    Permanent,
}

impl ProduceErrorKind {
    /// The `reason` label of `herald_produce_failures_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::TooLarge => "too_large",
            Self::Permanent => "permanent",
        }
    }
}

/// Classifies an error of `FutureProducer::send`.
pub fn classify(error: &KafkaError) -> ProduceErrorKind {
    match error {
        KafkaError::MessageProduction(code) => classify_code(*code),
        // The producer was dropped: nothing will ever acknowledge this record.
        KafkaError::Canceled => ProduceErrorKind::Permanent,
        _ => ProduceErrorKind::Transient,
    }
}

/// Classifies a librdkafka or broker error code reported for one produced record. Codes not
/// named here are transient: librdkafka already retries what it knows to be retriable, and an
/// unknown code retried with backoff stays visible in the logs and in `/readyz`. Authorization
/// and authentication failures are transient too: an operator fixes them (an ACL, a password)
/// while Herald waits, without losing or reordering anything.
pub fn classify_code(code: RDKafkaErrorCode) -> ProduceErrorKind {
    use RDKafkaErrorCode as C;
    match code {
        // Local (`message.max.bytes`) and broker (`max.message.bytes`) size checks.
        C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize => {
            ProduceErrorKind::TooLarge
        }
        C::Fatal
        | C::InvalidRecord
        | C::InvalidTimestamp
        | C::InvalidTopic
        | C::InvalidRequiredAcks
        | C::InvalidArgument
        | C::BadMessage
        | C::BadCompression
        | C::UnsupportedForMessageFormat
        | C::UnsupportedCompressionType
        | C::UnsupportedVersion
        | C::PolicyViolation
        | C::ProducerFenced
        | C::Fenced
        | C::InvalidProducerEpoch
        | C::OutOfOrderSequenceNumber => ProduceErrorKind::Permanent,
        _ => ProduceErrorKind::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProduceErrorKind::{Permanent, TooLarge, Transient};
    use RDKafkaErrorCode as C;

    #[test]
    fn produce_errors_are_classified() {
        let table = [
            (C::QueueFull, Transient),
            (C::MessageTimedOut, Transient),
            (C::RequestTimedOut, Transient),
            (C::BrokerTransportFailure, Transient),
            (C::AllBrokersDown, Transient),
            (C::LeaderNotAvailable, Transient),
            (C::NotLeaderForPartition, Transient),
            (C::UnknownTopicOrPartition, Transient),
            (C::UnknownTopic, Transient),
            (C::NotEnoughReplicas, Transient),
            (C::NetworkException, Transient),
            (C::PurgeQueue, Transient),
            (C::MessageSizeTooLarge, TooLarge),
            (C::MessageBatchTooLarge, TooLarge),
            (C::InvalidMessageSize, TooLarge),
            (C::Fatal, Permanent),
            (C::InvalidRecord, Permanent),
            (C::TopicAuthorizationFailed, Transient),
            (C::InvalidTopic, Permanent),
            (C::ProducerFenced, Permanent),
            (C::OutOfOrderSequenceNumber, Permanent),
        ];
        for (code, kind) in table {
            assert_eq!(
                classify(&KafkaError::MessageProduction(code)),
                kind,
                "{code:?}"
            );
        }
        assert_eq!(classify(&KafkaError::Canceled), Permanent);
        assert_eq!(
            classify(&KafkaError::Flush(C::OperationTimedOut)),
            Transient
        );
    }
}
