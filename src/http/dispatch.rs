//! The webhook dispatcher `serve` runs beside the server: it asks the core for due deliveries (which the core makes
//! from the store, so hits of every node and deliveries pending since before a restart alike), sends each signed,
//! and reports how it went. It wakes when this node records hits and otherwise every `alerts.poll_interval_s`, and
//! stops when the server does; a delivery cut off by the stop keeps its lease and is sent again later, with the
//! same `x-facematch-delivery`, so receivers drop duplicates by it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::service::{signature, DeliveryJob, Principal, WatchlistService};

/// Runs until `closing` turns true.
pub(super) async fn run(service: Arc<WatchlistService>, mut closing: watch::Receiver<bool>) {
    let config = service.alerts_config().clone();
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs_f64(config.webhook_timeout_s.max(0.1)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("facematch-webhook/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "webhook client cannot be made: no webhook is delivered");
            return;
        }
    };
    let mut hits = service.hit_signal();
    let poll = Duration::from_secs_f64(config.poll_interval_s.max(0.01));
    loop {
        if *closing.borrow() {
            return;
        }
        let worker = service.clone();
        let due = tokio::task::spawn_blocking(move || {
            worker.due_deliveries(SystemTime::now(), &Principal::system("webhook delivery"))
        })
        .await;
        let jobs = match due {
            Ok(Ok(jobs)) => jobs,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "webhook deliveries not read; retried at the next poll");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook dispatcher task failed");
                Vec::new()
            }
        };
        let busy = !jobs.is_empty();
        let sends = jobs.into_iter().map(|job| deliver(&client, service.clone(), job));
        tokio::select! {
            _ = futures_util::future::join_all(sends) => {}
            _ = closing.changed() => return,
        }
        if busy {
            // Another batch may be due already.
            continue;
        }
        tokio::select! {
            _ = hits.changed() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = closing.changed() => return,
        }
    }
}

/// One attempt: the signed POST, then the outcome recorded through the core.
async fn deliver(client: &reqwest::Client, service: Arc<WatchlistService>, job: DeliveryJob) {
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let signed = signature(&job.secret, timestamp, &job.body);
    let sent = client
        .post(&job.url)
        .header("content-type", "application/json")
        .header("x-facematch-event", "hit")
        .header("x-facematch-delivery", job.delivery.id.to_string())
        .header("x-facematch-timestamp", timestamp.to_string())
        .header("x-facematch-signature", signed)
        .body(job.body)
        .send()
        .await;
    let outcome = match sent {
        Ok(response) => Ok(response.status().as_u16()),
        Err(e) => Err(describe(&e)),
    };
    // Which delivery and how it went; never the body (it names people).
    match &outcome {
        Ok(status) => tracing::info!(delivery = job.delivery.id, webhook = job.delivery.webhook_id, status, "webhook attempt"),
        Err(error) => tracing::warn!(delivery = job.delivery.id, webhook = job.delivery.webhook_id, %error, "webhook attempt failed"),
    }
    let delivery = job.delivery;
    let recorded = tokio::task::spawn_blocking(move || {
        service.delivery_attempted(&delivery, outcome, SystemTime::now(), &Principal::system("webhook delivery"))
    })
    .await;
    match recorded {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "webhook attempt not recorded; the delivery is tried again after its lease"),
        Err(e) => tracing::warn!(error = %e, "webhook record task failed"),
    }
}

/// Why a request got no answer, in words for the delivery record: the kind and the innermost cause.
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_builder() {
        "request not made"
    } else {
        "request failed"
    };
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let cause = cause.to_string();
    let cause: String = cause.chars().take(200).collect();
    format!("{kind}: {cause}")
}
