//! The answers a connection received during one call, for a test event to show beside its
//! outcome. A caller opts in with [`recorded`]; outside it nothing is kept. Only the answers to
//! the destination's own requests are recorded (status and a bounded body excerpt), never a
//! token endpoint's answer and never a URL (a Slack incoming-webhook URL is a credential).
//! Calls made on another task (HubSpot's batcher, which answers for many deliveries at once)
//! are not recorded.

use std::cell::RefCell;
use std::future::Future;

use serde::Serialize;

/// The most answers kept for one call: chained actions make a few requests, not many.
pub const MAX_ANSWERS: usize = 8;

/// The most of each answer's body kept, in bytes (cut on a character boundary).
pub const MAX_ANSWER_BYTES: usize = 2048;

/// One response as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    pub status: u16,
    /// The body, cut to [`MAX_ANSWER_BYTES`] (marked with `…` when cut).
    pub body: String,
}

tokio::task_local! {
    static ANSWERS: RefCell<Vec<Answer>>;
}

/// Runs `call`, returning its output and the answers its requests received, in order (at most
/// [`MAX_ANSWERS`]).
pub async fn recorded<F: Future>(call: F) -> (F::Output, Vec<Answer>) {
    ANSWERS
        .scope(RefCell::new(Vec::new()), async {
            let out = call.await;
            (out, ANSWERS.with(RefCell::take))
        })
        .await
}

/// Keeps an answer when the current task records them.
pub(crate) fn record(status: u16, body: &str) {
    // Outside `recorded` there is nothing to keep: the error says only that.
    let _ = ANSWERS.try_with(|answers| {
        let mut answers = answers.borrow_mut();
        if answers.len() < MAX_ANSWERS {
            answers.push(Answer {
                status,
                body: cut(body.trim()),
            });
        }
    });
}

fn cut(text: &str) -> String {
    if text.len() <= MAX_ANSWER_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_ANSWER_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_are_kept_only_inside_a_recording_and_bounded() {
        record(200, "outside");
        let ((), answers) = recorded(async {
            for i in 0..MAX_ANSWERS + 3 {
                record(200 + i as u16, &"é".repeat(MAX_ANSWER_BYTES));
            }
        })
        .await;
        assert_eq!(answers.len(), MAX_ANSWERS);
        assert_eq!(answers[1].status, 201);
        assert!(answers[0].body.len() <= MAX_ANSWER_BYTES + '…'.len_utf8());
        assert!(answers[0].body.ends_with('…'));
        let ((), none) = recorded(async {}).await;
        assert!(none.is_empty(), "a new recording starts empty: {none:?}");
    }
}
