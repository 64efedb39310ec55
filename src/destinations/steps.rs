//! Actions made of several requests (ActiveCampaign, Intercom): each step either yields what
//! the next one needs or ends the attempt with its outcome.

use serde_json::Value;

use super::http::excerpt;
use super::{Attempted, Outcome};

/// A step of an action: its result, or the attempt's end.
pub type Step<T> = Result<T, Attempted>;

/// The attempt of a finished action: delivered with the last step's status, or where it ended.
pub fn finished(done: Step<u16>) -> Attempted {
    match done {
        Ok(status) => Attempted {
            outcome: Outcome::Delivered,
            status_code: Some(status),
        },
        Err(attempted) => attempted,
    }
}

/// A step's reply as classified: the body of a success, or the attempt's end with its status.
pub fn answered(status: u16, classified: Result<Value, Outcome>) -> Step<Value> {
    classified.map_err(|outcome| Attempted {
        outcome,
        status_code: Some(status),
    })
}

/// The end of an attempt whose rendered `with` cannot make a request.
pub fn permanent(reason: String) -> Attempted {
    Attempted::without_response(Outcome::Permanent { reason })
}

/// A success whose body lacks what the next step needs (`what`): asked again later.
pub fn unexpected(vendor: &str, status: u16, what: &str, body: &Value) -> Attempted {
    Attempted {
        outcome: Outcome::Retry {
            after: None,
            reason: format!(
                "{vendor}'s reply has no {what}: {}",
                excerpt(&body.to_string())
            ),
        },
        status_code: Some(status),
    }
}
