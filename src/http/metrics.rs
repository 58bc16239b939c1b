//! Prometheus metrics: request latency histograms per route, pipeline stage histograms, errors by code, gallery
//! size. A small registry of our own: fixed buckets, lock-free counters, rendered in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

/// Upper bounds in seconds: fine below 100 ms where the checkpoint targets live.
const BUCKETS: [f64; 14] = [0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds, so it can be an integer counter.
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}", self.counts[i].load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// The server's metrics.
#[derive(Default)]
pub struct Metrics {
    requests: RwLock<BTreeMap<(String, String), Histogram>>,
    stages: RwLock<BTreeMap<&'static str, Histogram>>,
    errors: RwLock<BTreeMap<&'static str, AtomicU64>>,
}

impl Metrics {
    pub fn observe_request(&self, route: &str, method: &str, seconds: f64) {
        let key = (route.to_string(), method.to_string());
        if let Some(h) = self.requests.read().get(&key) {
            h.observe(seconds);
            return;
        }
        self.requests.write().entry(key).or_default().observe(seconds);
    }

    pub fn observe_stage(&self, stage: &'static str, seconds: f64) {
        if let Some(h) = self.stages.read().get(stage) {
            h.observe(seconds);
            return;
        }
        self.stages.write().entry(stage).or_default().observe(seconds);
    }

    pub fn count_error(&self, code: &'static str) {
        if let Some(c) = self.errors.read().get(code) {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.errors.write().entry(code).or_default().fetch_add(1, Ordering::Relaxed);
    }

    /// Text exposition format; `gauges` are (name, help, value) read at scrape time.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP facematch_http_request_duration_seconds HTTP request latency by route.\n");
        out.push_str("# TYPE facematch_http_request_duration_seconds histogram\n");
        for ((route, method), h) in self.requests.read().iter() {
            h.render(&mut out, "facematch_http_request_duration_seconds", &format!("route=\"{route}\",method=\"{method}\""));
        }
        out.push_str("# HELP facematch_stage_duration_seconds Face pipeline and search stage latency.\n");
        out.push_str("# TYPE facematch_stage_duration_seconds histogram\n");
        for (stage, h) in self.stages.read().iter() {
            h.render(&mut out, "facematch_stage_duration_seconds", &format!("stage=\"{stage}\""));
        }
        out.push_str("# HELP facematch_errors_total Error responses by code.\n# TYPE facematch_errors_total counter\n");
        for (code, c) in self.errors.read().iter() {
            let _ = writeln!(out, "facematch_errors_total{{code=\"{code}\"}} {}", c.load(Ordering::Relaxed));
        }
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_request("/v1/search", "POST", 0.004);
        m.observe_request("/v1/search", "POST", 0.04);
        m.count_error("no_face_detected");
        let text = m.render(&[("facematch_gallery_templates", "Templates.", 3.0)]);
        assert!(text.contains(r#"facematch_http_request_duration_seconds_bucket{route="/v1/search",method="POST",le="0.005"} 1"#), "{text}");
        assert!(text.contains(r#"facematch_http_request_duration_seconds_bucket{route="/v1/search",method="POST",le="0.05"} 2"#));
        assert!(text.contains(r#"facematch_http_request_duration_seconds_count{route="/v1/search",method="POST"} 2"#));
        assert!(text.contains(r#"facematch_errors_total{code="no_face_detected"} 1"#));
        assert!(text.contains("facematch_gallery_templates 3"));
    }
}
