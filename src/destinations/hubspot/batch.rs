//! The HubSpot client and its batcher. Upserts that reach a connection while another of its
//! batch requests is in flight gather (for up to `batch_window_ms`) and leave as one batch
//! request of at most 100 inputs: one request instead of up to 100 against a quota of 100
//! requests per 10 s. An idle connection sends at once. Each caller still
//! gets its own [`Attempted`], because every input carries its delivery id as
//! `objectWriteTraceId` and HubSpot reports failures per input (207).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::config::{Auth, HubSpotConfig, MAX_BATCH_INPUTS};
use super::request::{self, Input, Upsert};
use super::response::{self, Sent, Verdict};
use crate::destinations::http::{self, HttpConnection};
use crate::destinations::oauth::{Refreshing, TokenSource};
use crate::destinations::{Attempted, Outcome};

/// Requests waiting for the batcher; `send` waits for room beyond this.
const QUEUE: usize = 1024;

/// Talks to HubSpot for one connection.
#[derive(Debug)]
pub struct Client {
    pub config: HubSpotConfig,
    pub http: HttpConnection,
    auth: Authorizer,
    /// Set by a daily-limit 429: until then every call is answered without calling HubSpot.
    paused_until: Mutex<Option<Instant>>,
}

/// Where the bearer token of each request comes from.
#[derive(Debug)]
enum Authorizer {
    Token(SecretString),
    OAuth(Refreshing),
}

impl Client {
    /// The client of a connection; `tokens` refreshes OAuth tokens (unused with a private-app
    /// token).
    pub fn new(
        config: HubSpotConfig,
        http: HttpConnection,
        tokens: Option<Arc<dyn TokenSource>>,
    ) -> Self {
        let auth = match &config.auth {
            Auth::Token(token) => Authorizer::Token(token.clone()),
            Auth::OAuth(stored) => {
                Authorizer::OAuth(Refreshing::new("HubSpot", stored.clone(), tokens))
            }
        };
        Self {
            config,
            http,
            auth,
            paused_until: Mutex::new(None),
        }
    }

    /// The bearer token a request made now would carry: the private-app token, or the OAuth
    /// access token (refreshed first when it is about to expire).
    pub async fn bearer_token(&self) -> Result<SecretString, Outcome> {
        match &self.auth {
            Authorizer::Token(token) => Ok(token.clone()),
            Authorizer::OAuth(tokens) => tokens.bearer().await.map(|b| b.token),
        }
    }

    /// Upserts `calls` (delivery id, upsert) in one request, merging duplicate emails, and
    /// returns one attempt per call in the same order.
    pub async fn upsert(&self, calls: &[(String, Upsert)]) -> Vec<Attempted> {
        let inputs = request::merge(calls.iter().map(|(id, u)| (id.as_str(), u)));
        let attempts = self.send_inputs(&inputs).await;
        let mut out = vec![None; calls.len()];
        for (input, attempt) in inputs.iter().zip(attempts) {
            for &member in &input.members {
                out[member] = Some(attempt.clone());
            }
        }
        out.into_iter()
            .map(|a| {
                // `merge` puts every call into exactly one input.
                a.unwrap_or_else(|| {
                    Attempted::without_response(Outcome::Retry {
                        after: None,
                        reason: "internal: upsert was not batched".into(),
                    })
                })
            })
            .collect()
    }

    /// One attempt per input. A whole-batch 400 is resolved by sending each input alone.
    async fn send_inputs(&self, inputs: &[Input]) -> Vec<Attempted> {
        match self.request(inputs).await {
            Err(outcome) => vec![Attempted::without_response(outcome); inputs.len()],
            Ok((status, Verdict::Split)) => {
                tracing::debug!(
                    status,
                    inputs = inputs.len(),
                    "HubSpot refused the whole batch; sending each contact alone"
                );
                let mut out = Vec::with_capacity(inputs.len());
                for input in inputs {
                    out.push(match self.request(std::slice::from_ref(input)).await {
                        Err(outcome) => Attempted::without_response(outcome),
                        Ok((status, verdict)) => {
                            let outcome = one(verdict, 1).pop().unwrap_or(Outcome::Retry {
                                after: None,
                                reason: "internal: no outcome".into(),
                            });
                            Attempted {
                                outcome,
                                status_code: Some(status),
                            }
                        }
                    });
                }
                out
            }
            Ok((status, verdict)) => one(verdict, inputs.len())
                .into_iter()
                .map(|outcome| Attempted {
                    outcome,
                    status_code: Some(status),
                })
                .collect(),
        }
    }

    /// Makes one request; `Err` is the outcome for every input when no response came back.
    async fn request(&self, inputs: &[Input]) -> Result<(u16, Verdict), Outcome> {
        if let Some(after) = self.paused_for() {
            return Err(Outcome::RateLimited { after: Some(after) });
        }
        // A fixed relative path under a base that ends with `/`; joining cannot fail.
        let url = self
            .config
            .api_base
            .join("crm/v3/objects/contacts/batch/upsert")
            .expect("valid path");
        let body = request::batch_body(inputs);
        let post = |token: &SecretString| {
            self.http.send(
                self.http
                    .request(reqwest::Method::POST, url.clone())
                    .bearer_auth(token.expose_secret())
                    .json(&body),
            )
        };
        let http::Received {
            status,
            headers,
            body,
        } = match &self.auth {
            Authorizer::Token(token) => post(token).await?,
            Authorizer::OAuth(tokens) => {
                let bearer = tokens.bearer().await?;
                let received = post(&bearer.token).await?;
                if received.status == 401 {
                    // Expired early or revoked: one refresh (shared with every call that got
                    // the same 401) and one more try.
                    let fresh = tokens.after_unauthorized(&bearer).await?;
                    post(&fresh.token).await?
                } else {
                    received
                }
            }
        };
        let after = http::retry_after(&headers);
        let sent: Vec<Sent<'_>> = inputs
            .iter()
            .map(|i| Sent {
                trace_id: &i.trace_id,
                email: &i.upsert.email,
            })
            .collect();
        let verdict = response::classify(
            status,
            after,
            &body,
            &sent,
            Utc::now(),
            self.config.account_utc_offset,
        );
        if let Verdict::DailyLimit { after } = verdict {
            tracing::warn!(
                pause_s = after.as_secs(),
                "HubSpot daily limit reached; pausing the connection until the reset"
            );
            *self.paused_until.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Instant::now() + after);
        }
        Ok((status, verdict))
    }

    /// How much longer a daily-limit pause lasts, if one is on.
    fn paused_for(&self) -> Option<Duration> {
        let mut paused = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        match *paused {
            Some(until) if until > Instant::now() => Some(until - Instant::now()),
            Some(_) => {
                *paused = None;
                None
            }
            None => None,
        }
    }
}

/// Spreads a verdict over `n` inputs.
fn one(verdict: Verdict, n: usize) -> Vec<Outcome> {
    match verdict {
        Verdict::PerInput(outcomes) => outcomes,
        Verdict::All(outcome) => vec![outcome; n],
        Verdict::DailyLimit { after } => vec![Outcome::RateLimited { after: Some(after) }; n],
        // Only a batch of several splits; one input alone gets a permanent outcome instead.
        Verdict::Split => vec![
            Outcome::Permanent {
                reason: "HubSpot refused the batch".into(),
            };
            n
        ],
    }
}

/// One upsert waiting for its batch.
#[derive(Debug)]
pub struct Job {
    pub delivery_id: String,
    pub upsert: Upsert,
    pub reply: oneshot::Sender<Attempted>,
}

/// Starts the batcher task of a connection; it ends when the returned sender is dropped.
pub fn spawn(client: Arc<Client>, window: Duration) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(client, window, rx));
    tx
}

/// Gathers jobs into batches. An idle connection sends at once (a workspace's events arrive
/// one after another, so waiting would only add latency); while a batch request is in flight
/// (or waiting for the rate limit), new jobs gather for up to `window` or until it returns,
/// so load turns into fewer, larger requests.
async fn run(client: Arc<Client>, window: Duration, mut rx: mpsc::Receiver<Job>) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(Notify::new());
    while let Some(first) = rx.recv().await {
        let deadline = Instant::now() + window;
        let mut emails = HashSet::from([first.upsert.email.clone()]);
        let mut jobs = vec![first];
        // Duplicates merge into one input, so the cap counts distinct emails.
        while emails.len() < MAX_BATCH_INPUTS {
            let job = match rx.try_recv() {
                Ok(job) => Some(job),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if window.is_zero() || in_flight.load(Ordering::Acquire) == 0 {
                        break;
                    }
                    tokio::select! {
                        next = tokio::time::timeout_at(deadline, rx.recv()) => match next {
                            Ok(Some(job)) => Some(job),
                            Ok(None) | Err(_) => break,
                        },
                        // A request returned: look again whether the connection is idle.
                        () = finished.notified() => None,
                    }
                }
            };
            if let Some(job) = job {
                emails.insert(job.upsert.email.clone());
                jobs.push(job);
            }
        }
        // The batch goes out on its own task so the next one can gather meanwhile.
        let client = client.clone();
        let (in_flight, finished) = (in_flight.clone(), finished.clone());
        in_flight.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let (calls, replies): (Vec<_>, Vec<_>) = jobs
                .into_iter()
                .map(|j| ((j.delivery_id, j.upsert), j.reply))
                .unzip();
            let attempts = client.upsert(&calls).await;
            in_flight.fetch_sub(1, Ordering::AcqRel);
            finished.notify_one();
            for (reply, attempt) in replies.into_iter().zip(attempts) {
                // A caller that gave up no longer needs its answer.
                let _ = reply.send(attempt);
            }
        });
    }
}
