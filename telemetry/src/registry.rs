//! Metric families and their text rendering. Counters and histograms are
//! updated where things happen; gauges are computed when scraped, from
//! the state the process already keeps (node and pod counts, heartbeat
//! ages), so they cost nothing between scrapes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

/// Something that renders itself as one metric family.
pub trait Family: Send + Sync {
    fn render(&self, out: &mut String);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels_text(names: &[&str], values: &[String], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    if let Some((n, v)) = extra {
        parts.push(format!("{n}=\"{}\"", escape(v)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(
        out,
        "# HELP {name} {}",
        help.replace('\\', "\\\\").replace('\n', "\\n")
    );
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A counter with labels.
pub struct CounterVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterVec {
    pub fn inc(&self, labels: &[&str]) {
        self.add(labels, 1);
    }

    pub fn add(&self, labels: &[&str], n: u64) {
        let key: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        *lock(&self.values).entry(key).or_insert(0) += n;
    }

    pub fn get(&self, labels: &[&str]) -> u64 {
        let key: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        lock(&self.values).get(&key).copied().unwrap_or(0)
    }
}

impl Family for CounterVec {
    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "counter");
        for (values, n) in lock(&self.values).iter() {
            let _ = writeln!(
                out,
                "{}{} {n}",
                self.name,
                labels_text(self.labels, values, None)
            );
        }
    }
}

/// A histogram with labels and fixed buckets (seconds).
pub struct HistogramVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    buckets: Vec<f64>,
    values: Mutex<BTreeMap<Vec<String>, Observed>>,
}

#[derive(Default, Clone)]
struct Observed {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Latency buckets from 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl HistogramVec {
    pub fn observe(&self, labels: &[&str], value: f64) {
        let key: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        let mut values = lock(&self.values);
        let o = values.entry(key).or_insert_with(|| Observed {
            counts: vec![0; self.buckets.len()],
            ..Default::default()
        });
        for (i, b) in self.buckets.iter().enumerate() {
            if value <= *b {
                o.counts[i] += 1;
            }
        }
        o.sum += value;
        o.count += 1;
    }

    pub fn count(&self, labels: &[&str]) -> u64 {
        let key: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        lock(&self.values).get(&key).map(|o| o.count).unwrap_or(0)
    }
}

impl Family for HistogramVec {
    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        for (values, o) in lock(&self.values).iter() {
            for (b, n) in self.buckets.iter().zip(&o.counts) {
                let l = labels_text(self.labels, values, Some(("le", &number(*b))));
                let _ = writeln!(out, "{}_bucket{l} {n}", self.name);
            }
            let l = labels_text(self.labels, values, Some(("le", "+Inf")));
            let _ = writeln!(out, "{}_bucket{l} {}", self.name, o.count);
            let l = labels_text(self.labels, values, None);
            let _ = writeln!(out, "{}_sum{l} {}", self.name, number(o.sum));
            let _ = writeln!(out, "{}_count{l} {}", self.name, o.count);
        }
    }
}

/// A gauge (or a counter) computed at scrape time: label values and a
/// value per sample.
pub struct GaugeFn {
    name: &'static str,
    /// `gauge`, or `counter` for a total that only grows.
    kind: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    read: Box<dyn Fn() -> Vec<(Vec<String>, f64)> + Send + Sync>,
}

impl Family for GaugeFn {
    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, self.kind);
        for (values, v) in (self.read)() {
            let _ = writeln!(
                out,
                "{}{} {}",
                self.name,
                labels_text(self.labels, &values, None),
                number(v)
            );
        }
    }
}

/// All metric families of a process.
#[derive(Default)]
pub struct Registry {
    families: Mutex<Vec<Arc<dyn Family>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Arc<CounterVec> {
        let c = Arc::new(CounterVec {
            name,
            help,
            labels,
            values: Default::default(),
        });
        lock(&self.families).push(c.clone());
        c
    }

    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Arc<HistogramVec> {
        let h = Arc::new(HistogramVec {
            name,
            help,
            labels,
            buckets: LATENCY_BUCKETS.to_vec(),
            values: Default::default(),
        });
        lock(&self.families).push(h.clone());
        h
    }

    /// A gauge computed at scrape time.
    pub fn gauge_fn(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        read: impl Fn() -> Vec<(Vec<String>, f64)> + Send + Sync + 'static,
    ) {
        self.computed("gauge", name, help, labels, Box::new(read));
    }

    /// A counter whose value is computed at scrape time (for totals that
    /// grow continuously, such as seconds spent in some state).
    pub fn counter_fn(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        read: impl Fn() -> Vec<(Vec<String>, f64)> + Send + Sync + 'static,
    ) {
        self.computed("counter", name, help, labels, Box::new(read));
    }

    fn computed(
        &self,
        kind: &'static str,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        read: Box<dyn Fn() -> Vec<(Vec<String>, f64)> + Send + Sync>,
    ) {
        lock(&self.families).push(Arc::new(GaugeFn {
            name,
            kind,
            help,
            labels,
            read,
        }));
    }

    /// Every family in the text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in lock(&self.families).iter() {
            f.render(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_in_the_text_format() {
        let r = Registry::new();
        let c = r.counter(
            "skiff_api_requests_total",
            "API requests.",
            &["method", "code"],
        );
        c.inc(&["Create", "OK"]);
        c.add(&["Create", "OK"], 2);
        let h = r.histogram(
            "skiff_api_request_duration_seconds",
            "API latency.",
            &["method"],
        );
        h.observe(&["Get"], 0.003);
        r.gauge_fn("skiff_nodes", "Nodes by readiness.", &["ready"], || {
            vec![(vec!["true".into()], 3.0), (vec!["a\"b".into()], 0.5)]
        });
        let text = r.render();
        assert!(text.contains("# TYPE skiff_api_requests_total counter\n"));
        assert!(text.contains("skiff_api_requests_total{method=\"Create\",code=\"OK\"} 3\n"));
        assert!(text.contains(
            "skiff_api_request_duration_seconds_bucket{method=\"Get\",le=\"0.0025\"} 0\n"
        ));
        assert!(text.contains(
            "skiff_api_request_duration_seconds_bucket{method=\"Get\",le=\"0.005\"} 1\n"
        ));
        assert!(text
            .contains("skiff_api_request_duration_seconds_bucket{method=\"Get\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("skiff_api_request_duration_seconds_count{method=\"Get\"} 1\n"));
        assert!(text.contains("skiff_nodes{ready=\"true\"} 3\n"));
        assert!(text.contains(r#"skiff_nodes{ready="a\"b"} 0.5"#), "{text}");
    }
}
