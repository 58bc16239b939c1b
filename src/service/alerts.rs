//! Alerts as they happen: the settings of the stream and the webhooks (`[alerts]`), the in-process wake-up that
//! makes them prompt, and the feed a stream reads. The store is the truth: a stream reads the hits after its cursor
//! from the store, so a hit another node recorded arrives at the next poll; the wake-up only spares the wait on
//! this node.

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::gallery::{validation, Hit, HitQuery, HitSource, InvalidKind};

use super::{Permission, Principal, ServiceError, WatchlistService};

/// Hits read from the store per page of a stream.
const FEED_PAGE: usize = 100;

/// Alert streams and webhooks (`[alerts]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Attempts at delivering one hit to one webhook before the delivery is marked failed (default 8).
    pub webhook_max_attempts: u32,
    /// Seconds before the second attempt; each further wait doubles, capped at an hour (default 2: 2, 4, 8 … s).
    pub webhook_backoff_s: f64,
    /// Seconds a receiver has to answer an attempt (default 10).
    pub webhook_timeout_s: f64,
    /// Seconds between reads of the store for hits that another node recorded, and for due deliveries (default 1);
    /// hits of this node wake streams and the dispatcher at once.
    pub poll_interval_s: f64,
    /// Seconds between keep-alive comments on an open stream (default 15), so proxies keep it open.
    pub keepalive_s: f64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook_max_attempts: 8,
            webhook_backoff_s: 2.0,
            webhook_timeout_s: 10.0,
            poll_interval_s: 1.0,
            keepalive_s: 15.0,
        }
    }
}

/// What a stream asks for; absent filters select every hit the caller may read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertFilter {
    /// Only these watchlists (each must be the caller's).
    pub watchlists: Option<Vec<String>>,
    /// Only this source; absent: every source (checkpoint alerts and job candidates alike).
    pub source: Option<HitSource>,
}

/// An opened stream: the query it reads, with the caller's limits applied, and where it starts.
#[derive(Debug, Clone)]
pub struct AlertFeed {
    query: HitQuery,
    /// The id after which hits are sent: the one the client resumes from, or the newest hit when it opened.
    pub start_after: i64,
    /// The change number after which changed hits are sent: the newest when it opened (changes are not replayed).
    pub changes_after: i64,
}

impl WatchlistService {
    /// Sets the stream and webhook settings.
    pub fn with_alerts(mut self, alerts: AlertsConfig) -> Self {
        self.alerts = alerts;
        self
    }

    pub fn alerts_config(&self) -> &AlertsConfig {
        &self.alerts
    }

    /// Changes whenever this node records or changes hits; a wake-up only (the store is the truth).
    pub fn hit_signal(&self) -> watch::Receiver<u64> {
        self.hit_signal.subscribe()
    }

    pub(super) fn signal_hits(&self) {
        self.hit_signal.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Opens a stream of hits for the caller: checks that they may read hits and every watchlist they ask for,
    /// and fixes where it starts (after `resume_after`, or after the newest hit now).
    pub fn open_alert_feed(
        &self,
        filter: AlertFilter,
        resume_after: Option<i64>,
        caller: &Principal,
    ) -> Result<AlertFeed, ServiceError> {
        caller.require(Permission::ReadHits)?;
        if let Some(names) = &filter.watchlists {
            for name in names {
                validation::validate_watchlist_name(name)?;
                caller.require_watchlist(name)?;
            }
        }
        if let Some(after) = resume_after.filter(|after| *after < 0) {
            return Err(crate::gallery::GalleryError::invalid(InvalidKind::HitQuery, format!("cannot resume after {after}")).into());
        }
        let start_after = match resume_after {
            Some(after) => after,
            None => self.store.latest_hit_id()?,
        };
        let within = filter.watchlists.or_else(|| caller.watchlists.clone());
        let query = HitQuery { source: filter.source, within, limit: FEED_PAGE, ..HitQuery::default() };
        let changes_after = self.store.latest_hit_change()?;
        Ok(AlertFeed { query, start_after, changes_after })
    }

    /// The next hits of an open stream after `after`, oldest first (at most a page). The role is checked on every
    /// read, as on every request.
    pub fn alerts_after(&self, feed: &AlertFeed, after: i64, caller: &Principal) -> Result<Vec<Hit>, ServiceError> {
        caller.require(Permission::ReadHits)?;
        let query = HitQuery { after: Some(after), ..feed.query.clone() };
        Ok(self.store.list_hits(&query)?.items)
    }

    /// The hits of an open stream changed (acknowledged, reviewed) after change number `after`, as they are now,
    /// each with its change number.
    pub fn alert_changes_after(&self, feed: &AlertFeed, after: i64, caller: &Principal) -> Result<Vec<(i64, Hit)>, ServiceError> {
        caller.require(Permission::ReadHits)?;
        Ok(self.store.changed_hits(after, &feed.query)?)
    }
}
