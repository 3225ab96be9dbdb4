//! What every delivery-style scenario hands back: latency histograms (HdrHistogram, overall and
//! per second), a timeline sampled by the main thread, and named figures. Printed as a table,
//! written as JSON (`--out`) and as an SVG chart (`--chart`).

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt::Write as _;
use std::path::Path;

/// Largest latency recorded, in µs (larger values are clamped).
const MAX_LATENCY_US: u64 = 600_000_000;

/// A new latency histogram in µs, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Latencies seen by one thread: overall and by second of the run.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// Every latency, in µs.
    pub all: Histogram<u64>,
    /// Latencies by the second (since the run started) in which they were received.
    pub by_second: Vec<Histogram<u64>>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            all: new_histogram(),
            by_second: Vec::new(),
        }
    }
}

impl Latencies {
    /// Records a latency of `us` µs, received `second` seconds into the run.
    pub fn record(&mut self, us: u64, second: usize) {
        let v = us.clamp(1, MAX_LATENCY_US);
        self.all.saturating_record(v);
        if second < 3600 {
            while self.by_second.len() <= second {
                self.by_second.push(new_histogram());
            }
            self.by_second[second].saturating_record(v);
        }
    }

    /// Adds another thread's latencies.
    pub fn merge(&mut self, other: &Latencies) {
        let _ = self.all.add(&other.all);
        for (i, h) in other.by_second.iter().enumerate() {
            while self.by_second.len() <= i {
                self.by_second.push(new_histogram());
            }
            let _ = self.by_second[i].add(h);
        }
    }
}

/// Percentiles of a histogram, in ms.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// The percentiles of `h` (µs) in ms; `None` when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        })
    }
}

/// One point of the timeline (one per sampling interval).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Point {
    /// Seconds since the run (or, for set-up-only scenarios, the set-up) started.
    pub t_s: f64,
    /// Open, subscribed connections.
    pub connections: u64,
    /// Deliveries per second over the interval.
    pub deliveries_per_s: f64,
    /// Connection errors so far (failed + dropped + pusher errors + publish errors).
    pub errors: u64,
    /// Latency percentiles of the deliveries received in this second, in ms.
    pub latency: Option<Percentiles>,
    /// Server `VmRSS`, in KiB.
    pub server_rss_kb: Option<u64>,
    /// Server CPU over the interval, in % of one core.
    pub server_cpu_pct: Option<f64>,
}

/// A scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// What was measured (WebSocket URL, or "harness" for raw-fanout).
    pub target: String,
    /// The parameters of the run.
    pub params: Map<String, Value>,
    /// The figures, in the order they are printed.
    #[serde(serialize_with = "figures_as_object")]
    pub figures: Vec<(String, Value)>,
    /// Overall latency percentiles (ms), for delivery scenarios.
    pub latency_ms: Option<Percentiles>,
    /// The timeline.
    pub timeline: Vec<Point>,
    /// Remarks: limits that capped the run, anomalies.
    pub notes: Vec<String>,
}

fn figures_as_object<S: serde::Serializer>(
    figures: &[(String, Value)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(figures.len()))?;
    for (k, v) in figures {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

impl Report {
    /// An empty report for `scenario` against `target`.
    pub fn new(scenario: &str, target: &str) -> Self {
        Self {
            scenario: scenario.to_string(),
            target: target.to_string(),
            params: Map::new(),
            figures: Vec::new(),
            latency_ms: None,
            timeline: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Records a parameter.
    pub fn param(&mut self, name: &str, value: impl Into<Value>) {
        self.params.insert(name.to_string(), value.into());
    }

    /// Records a figure (`None` becomes `null`, shown as n/a).
    pub fn figure(&mut self, name: &str, value: impl Into<Value>) {
        self.figures.push((name.to_string(), value.into()));
    }

    /// A figure's numeric value.
    pub fn number(&self, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_f64())
    }

    /// Sets the latency figures from the merged histogram.
    pub fn set_latency(&mut self, latencies: &Latencies) {
        self.latency_ms = Percentiles::of(&latencies.all);
        if let Some(p) = self.latency_ms {
            self.figure("latency_p50_ms", p.p50);
            self.figure("latency_p90_ms", p.p90);
            self.figure("latency_p99_ms", p.p99);
            self.figure("latency_p999_ms", p.p999);
            self.figure("latency_max_ms", p.max);
        }
        for (i, point) in self.timeline.iter_mut().enumerate() {
            point.latency = latencies.by_second.get(i).and_then(Percentiles::of);
        }
    }

    /// Prints the summary table on stdout.
    pub fn print(&self) {
        println!();
        println!("== {} against {} ==", self.scenario, self.target);
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("   {}", params.join(" "));
        let width = self.figures.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &self.figures {
            println!("   {k:<width$}  {}", format_value(v));
        }
        for note in &self.notes {
            println!("   note: {note}");
        }
    }

    /// Writes `--out` and `--chart` where given.
    pub fn write_files(&self, out: Option<&Path>, chart: Option<&Path>) -> Result<(), String> {
        if let Some(path) = out {
            let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
            std::fs::write(path, text)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("warren-loadtest: report written to {}", path.display());
        }
        if let Some(path) = chart {
            std::fs::write(path, self.svg())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("warren-loadtest: chart written to {}", path.display());
        }
        Ok(())
    }

    /// The chart: latency percentiles, deliveries/s and connections over time, one panel each.
    pub fn svg(&self) -> String {
        let (w, panel_h, margin_l, margin_t) = (900.0, 220.0, 80.0, 40.0);
        let panels = 3.0;
        let h = margin_t + panels * (panel_h + 50.0);
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            out,
            r#"<text x="{margin_l}" y="22" font-size="15">{} against {}</text>"#,
            xml(&self.scenario),
            xml(&self.target)
        );
        let t_max = self.timeline.iter().map(|p| p.t_s).fold(1.0f64, f64::max);
        let lat = |f: fn(&Percentiles) -> f64| -> Vec<(f64, f64)> {
            self.timeline
                .iter()
                .filter_map(|p| p.latency.as_ref().map(|l| (p.t_s, f(l))))
                .collect()
        };
        let series_sets: [(&str, Vec<Series>); 3] = [
            (
                "latency (ms) by second received",
                vec![
                    ("p50", "#1f77b4", lat(|l| l.p50)),
                    ("p99", "#ff7f0e", lat(|l| l.p99)),
                    ("p99.9", "#d62728", lat(|l| l.p999)),
                    ("max", "#7f7f7f", lat(|l| l.max)),
                ],
            ),
            (
                "deliveries / s",
                vec![(
                    "deliveries/s",
                    "#2ca02c",
                    self.timeline
                        .iter()
                        .map(|p| (p.t_s, p.deliveries_per_s))
                        .collect(),
                )],
            ),
            (
                "connections",
                vec![(
                    "connections",
                    "#9467bd",
                    self.timeline
                        .iter()
                        .map(|p| (p.t_s, p.connections as f64))
                        .collect(),
                )],
            ),
        ];
        let plot_w = w - margin_l - 160.0;
        for (i, (title, series)) in series_sets.iter().enumerate() {
            let top = margin_t + i as f64 * (panel_h + 50.0) + 20.0;
            let y_max = series
                .iter()
                .flat_map(|(_, _, pts)| pts.iter().map(|p| p.1))
                .fold(0.0f64, f64::max)
                .max(1e-9)
                * 1.1;
            let _ = writeln!(
                out,
                r#"<text x="{margin_l}" y="{}" font-weight="bold">{}</text>"#,
                top - 6.0,
                xml(title)
            );
            let _ = writeln!(
                out,
                r##"<rect x="{margin_l}" y="{top}" width="{plot_w}" height="{panel_h}" fill="none" stroke="#999"/>"##
            );
            for k in 0..=4 {
                let v = y_max * k as f64 / 4.0;
                let y = top + panel_h - panel_h * k as f64 / 4.0;
                let _ = writeln!(
                    out,
                    r##"<line x1="{margin_l}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                    margin_l + plot_w,
                    margin_l - 6.0,
                    y + 4.0,
                    short(v)
                );
            }
            for k in 0..=5 {
                let t = t_max * k as f64 / 5.0;
                let x = margin_l + plot_w * k as f64 / 5.0;
                let _ = writeln!(
                    out,
                    r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{t:.0} s</text>"#,
                    top + panel_h + 16.0
                );
            }
            for (j, (name, color, pts)) in series.iter().enumerate() {
                let coords: Vec<String> = pts
                    .iter()
                    .map(|(t, v)| {
                        format!(
                            "{:.1},{:.1}",
                            margin_l + plot_w * t / t_max,
                            top + panel_h - panel_h * v / y_max
                        )
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                    coords.join(" ")
                );
                let ly = top + 14.0 + j as f64 * 16.0;
                let lx = margin_l + plot_w + 12.0;
                let _ = writeln!(
                    out,
                    r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{name}</text>"#,
                    lx + 18.0,
                    lx + 24.0,
                    ly + 4.0
                );
            }
        }
        out.push_str("</svg>\n");
        out
    }
}

/// A value as the table shows it.
pub fn format_value(v: &Value) -> String {
    match v {
        Value::Null => "n/a".into(),
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.abs() >= 100.0 {
                format!("{f:.0}")
            } else if f.abs() >= 1.0 {
                format!("{f:.2}")
            } else {
                format!("{f:.4}")
            }
        }
        other => other.to_string(),
    }
}

/// One line of a chart panel: legend, colour, points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A short axis label.
fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_serialises_and_charts() {
        let mut r = Report::new("fanout", "ws://x");
        r.param("subscribers", 3);
        r.figure("lost", 0);
        r.figure("deliveries_per_s", 12.5);
        r.timeline.push(Point {
            t_s: 1.0,
            connections: 3,
            deliveries_per_s: 12.5,
            ..Point::default()
        });
        let mut l = Latencies::default();
        l.record(1500, 0);
        l.record(2500, 0);
        r.set_latency(&l);
        let v: Value = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(v["figures"]["lost"], 0);
        assert!(v["latency_ms"]["p50"].as_f64().unwrap() > 1.0);
        let svg = r.svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
}
