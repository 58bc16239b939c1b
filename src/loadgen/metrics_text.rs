//! The Prometheus text the server exposes at `/metrics`, as the load generator reads it: a parser of the text
//! exposition format, and the searches' per-stage histograms and error counts taken from one scrape and
//! differenced between two.

use std::collections::BTreeMap;

use serde::Serialize;


/// A line of Prometheus text exposition that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("metrics text line {line}: {problem}")]
pub struct MetricsTextError {
    pub line: usize,
    pub problem: &'static str,
}


/// One sample of the Prometheus text exposition format.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the text exposition format (version 0.0.4): `name{label="value",…} value [timestamp]` per line;
/// comments and blank lines are skipped. Label values may contain escaped `\\`, `\"` and `\n`.
pub fn parse_metrics_text(text: &str) -> Result<Vec<MetricSample>, MetricsTextError> {
    let mut samples = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |problem: &'static str| MetricsTextError { line: index + 1, problem };
        let name_end = line
            .char_indices()
            .find(|(i, c)| !(c.is_ascii_alphabetic() || *c == '_' || *c == ':' || (*i > 0 && c.is_ascii_digit())))
            .map_or(line.len(), |(i, _)| i);
        if name_end == 0 {
            return Err(fail("expected a metric name"));
        }
        let name = line[..name_end].to_string();
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(after) = rest.strip_prefix('{') {
            rest = parse_labels(after, &mut labels).map_err(fail)?;
        }
        let mut fields = rest.split_whitespace();
        let value_text = fields.next().ok_or_else(|| fail("expected a value after the name"))?;
        let value = value_text.parse::<f64>().map_err(|_| fail("value is not a number"))?;
        if let Some(timestamp) = fields.next() {
            timestamp.parse::<i64>().map_err(|_| fail("timestamp is not an integer"))?;
        }
        if fields.next().is_some() {
            return Err(fail("unexpected text after the value"));
        }
        samples.push(MetricSample { name, labels, value });
    }
    Ok(samples)
}

/// Reads `name="value",…}` and returns what follows the closing brace.
fn parse_labels<'t>(mut rest: &'t str, labels: &mut BTreeMap<String, String>) -> Result<&'t str, &'static str> {
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let eq = rest.find('=').ok_or("expected `=` in a label")?;
        let key = rest[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err("invalid label name");
        }
        rest = rest[eq + 1..].trim_start().strip_prefix('"').ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let close = loop {
            match chars.next() {
                None => return Err("unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => return Err("invalid escape in a label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.insert(key.to_string(), value);
        rest = rest[close + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected `,` or `}` after a label");
        }
    }
}

/// Running totals of a histogram: sum in seconds and observation count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct HistogramTotals {
    pub sum_s: f64,
    pub count: f64,
}

impl HistogramTotals {
    /// Takes the value of a `…_sum` or `…_count` sample.
    fn record(&mut self, name: &str, value: f64) {
        if name.ends_with("_sum") {
            self.sum_s = value;
        } else {
            self.count = value;
        }
    }
}

/// What one `/metrics` scrape says about searches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// `facematch_stage_duration_seconds` per `stage`.
    pub stages: BTreeMap<String, HistogramTotals>,
    /// `facematch_http_request_duration_seconds{route="/v1/search",method="POST"}`: the whole handler, admission
    /// queue included.
    pub search_route: HistogramTotals,
    /// `facematch_errors_total` per `code`.
    pub errors: BTreeMap<String, f64>,
    /// `facematch_gallery_templates`.
    pub gallery_templates: Option<f64>,
}

impl MetricsSnapshot {
    pub fn from_samples(samples: &[MetricSample]) -> MetricsSnapshot {
        let mut snapshot = MetricsSnapshot::default();
        for sample in samples {
            let label = |key: &str| sample.labels.get(key).map(String::as_str);
            match sample.name.as_str() {
                n @ ("facematch_stage_duration_seconds_sum" | "facematch_stage_duration_seconds_count") => {
                    if let Some(stage) = label("stage") {
                        snapshot.stages.entry(stage.to_string()).or_default().record(n, sample.value);
                    }
                }
                n @ ("facematch_http_request_duration_seconds_sum" | "facematch_http_request_duration_seconds_count")
                    if label("route") == Some("/v1/search") && label("method") == Some("POST") =>
                {
                    snapshot.search_route.record(n, sample.value);
                }
                "facematch_errors_total" => {
                    if let Some(code) = label("code") {
                        snapshot.errors.insert(code.to_string(), sample.value);
                    }
                }
                "facematch_gallery_templates" => snapshot.gallery_templates = Some(sample.value),
                _ => {}
            }
        }
        snapshot
    }

    /// What happened between `before` and this scrape.
    pub fn since(&self, before: &MetricsSnapshot) -> ServerLevel {
        let delta = |now: &HistogramTotals, then: Option<&HistogramTotals>| {
            let then = then.copied().unwrap_or_default();
            let count = now.count - then.count;
            (count > 0.0).then(|| StageMean { count: count as u64, mean_ms: (now.sum_s - then.sum_s) / count * 1000.0 })
        };
        let stages = self
            .stages
            .iter()
            .filter_map(|(stage, now)| delta(now, before.stages.get(stage)).map(|m| (stage.clone(), m)))
            .collect();
        let errors = self
            .errors
            .iter()
            .map(|(code, now)| (code.clone(), (now - before.errors.get(code).copied().unwrap_or(0.0)) as u64))
            .filter(|(_, n)| *n > 0)
            .collect();
        ServerLevel { stages, search_route: delta(&self.search_route, Some(&before.search_route)), errors_by_code: errors }
    }
}

/// Mean of one server histogram over a level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StageMean {
    pub count: u64,
    pub mean_ms: f64,
}

/// The server's view of one level, from the difference of two scrapes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerLevel {
    /// Per pipeline stage; only successful searches are observed.
    pub stages: BTreeMap<String, StageMean>,
    /// The `POST /v1/search` handler as a whole (every answer, errors included).
    pub search_route: Option<StageMean>,
    pub errors_by_code: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the server's own registry renders, so the parser is tested against the real format.
    fn server_text(stage_ms: &[(&'static str, f64)], searches: &[f64], errors: &[&'static str]) -> String {
        let metrics = crate::http::metrics::Metrics::default();
        for (stage, ms) in stage_ms {
            metrics.observe_stage(stage, ms / 1000.0);
        }
        for s in searches {
            metrics.observe_request("/v1/search", "POST", *s);
        }
        metrics.observe_request("/v1/subjects", "GET", 0.5);
        for code in errors {
            metrics.count_error(code);
        }
        metrics.render(&[("facematch_gallery_templates", "Live templates.", 1234.0)])
    }

    #[test]
    fn parses_the_servers_own_exposition() {
        let text = server_text(&[("detect", 10.0), ("detect", 20.0), ("embed", 4.0)], &[0.03], &["overloaded"]);
        let samples = parse_metrics_text(&text).unwrap();
        let detect_count = samples
            .iter()
            .find(|s| s.name == "facematch_stage_duration_seconds_count" && s.labels.get("stage").map(String::as_str) == Some("detect"))
            .expect("detect count present");
        assert_eq!(detect_count.value, 2.0);
        let inf = samples
            .iter()
            .find(|s| s.name.ends_with("_bucket") && s.labels.get("le").map(String::as_str) == Some("+Inf"))
            .expect("an +Inf bucket");
        assert!(inf.value >= 1.0);
        let snapshot = MetricsSnapshot::from_samples(&samples);
        assert_eq!(snapshot.gallery_templates, Some(1234.0));
        assert_eq!(snapshot.errors.get("overloaded"), Some(&1.0));
        assert_eq!(snapshot.search_route.count, 1.0);
        assert!((snapshot.stages["detect"].sum_s - 0.030).abs() < 1e-6, "{:?}", snapshot.stages);
    }

    #[test]
    fn difference_of_two_scrapes_gives_per_level_means() {
        let metrics = crate::http::metrics::Metrics::default();
        metrics.observe_stage("detect", 0.100);
        metrics.observe_request("/v1/search", "POST", 0.2);
        let before = MetricsSnapshot::from_samples(&parse_metrics_text(&metrics.render(&[])).unwrap());
        metrics.observe_stage("detect", 0.010);
        metrics.observe_stage("detect", 0.020);
        metrics.observe_stage("search", 0.001);
        metrics.observe_request("/v1/search", "POST", 0.040);
        metrics.observe_request("/v1/search", "POST", 0.060);
        metrics.count_error("no_face_detected");
        let after = MetricsSnapshot::from_samples(&parse_metrics_text(&metrics.render(&[])).unwrap());
        let level = after.since(&before);
        let detect = level.stages["detect"];
        assert_eq!(detect.count, 2);
        assert!((detect.mean_ms - 15.0).abs() < 1e-6, "{detect:?}");
        assert_eq!(level.stages["search"].count, 1);
        let route = level.search_route.expect("search route observed");
        assert_eq!(route.count, 2);
        assert!((route.mean_ms - 50.0).abs() < 1e-6, "{route:?}");
        assert_eq!(level.errors_by_code.get("no_face_detected"), Some(&1));
        // Nothing happened between two identical scrapes.
        let idle = after.since(&after);
        assert!(idle.stages.is_empty() && idle.search_route.is_none() && idle.errors_by_code.is_empty());
    }

    #[test]
    fn label_escapes_timestamps_and_special_values() {
        let text = "# HELP x y\n\nm{a=\"q\\\"uo\\\\te\\nnl\",b=\"2\",} 3.5 1700000000000\nm2 NaN\nm3{} -Inf\n";
        let samples = parse_metrics_text(text).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].labels["a"], "q\"uo\\te\nnl");
        assert_eq!(samples[0].labels["b"], "2");
        assert_eq!(samples[0].value, 3.5);
        assert!(samples[1].value.is_nan());
        assert_eq!(samples[2].value, f64::NEG_INFINITY);
    }

    #[test]
    fn malformed_lines_name_their_line() {
        for (text, line) in [
            ("ok 1\n{a=\"b\"} 2\n", 2),
            ("m{a=\"b} 1\n", 1),
            ("m{a=b} 1\n", 1),
            ("a 1\nb 2\nm 1 2 3\n", 3),
            ("m abc\n", 1),
            ("m{a=\"x\"\n", 1),
            ("m\n", 1),
        ] {
            let err = parse_metrics_text(text).expect_err(text);
            assert_eq!(err.line, line, "{text:?}: {err}");
        }
    }
}
