//! `kes metric`: a live dashboard on a terminal, refreshed every `--rate`
//! (cli.md §9.2); one JSON object per interval when piped, with KES's keys.
//!
//! Drawing is a pure function of two scrapes ([`draw`]), so a frame can be
//! rendered and checked without a terminal.

use std::io::Write;
use std::time::{Duration, Instant};

use argh::FromArgs;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
use ratatui::layout::{Constraint, Direction, Layout};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Paragraph};
use ratatui::Frame;
use serde_json::{json, Map, Value};

use super::output::tty;

conn_fields! {
    /// Show the server's metrics: a live dashboard, or JSON lines when piped.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "metric")]
    pub struct MetricCmd {
        /// refresh interval, e.g. 5s or 500ms (default 5s)
        #[argh(option, default = "String::from(\"5s\")")]
        rate: String,
    }
}

impl MetricCmd {
    pub fn run(self) -> Result<(), String> {
        let rate = kes_core::time::parse_go_duration(&self.rate)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("invalid --rate '{}': use a duration like 5s", self.rate))?;
        let client = self.client()?;
        let scrape = || -> Result<Snapshot, String> {
            let text = client.metrics().map_err(|e| format!("failed to fetch metrics: {e}"))?;
            Ok(Snapshot::parse(&text))
        };
        if tty() {
            let endpoint = self.server.clone().or_else(|| std::env::var("KES_SERVER").ok());
            dashboard(scrape, rate, endpoint.as_deref().unwrap_or("127.0.0.1:7373"))
        } else {
            json_lines(scrape, rate)
        }
    }
}

/// One JSON object per interval until stdout closes.
fn json_lines(scrape: impl Fn() -> Result<Snapshot, String>, rate: Duration) -> Result<(), String> {
    let mut out = std::io::stdout();
    loop {
        let s = scrape()?;
        if writeln!(out, "{}", s.to_json()).and_then(|()| out.flush()).is_err() {
            return Ok(()); // the reader went away
        }
        std::thread::sleep(rate);
    }
}

/// The full-screen view until q, Esc or Ctrl-C.
fn dashboard(
    scrape: impl Fn() -> Result<Snapshot, String>,
    rate: Duration,
    endpoint: &str,
) -> Result<(), String> {
    let mut previous = scrape()?;
    let mut since = Instant::now();
    let mut current = previous.clone();
    let mut terminal = ratatui::init();
    let result = (|| -> Result<(), String> {
        loop {
            let elapsed = since.elapsed().as_secs_f64();
            terminal
                .draw(|f| draw(f, endpoint, &previous, &current, elapsed))
                .map_err(|e| e.to_string())?;
            let deadline = Instant::now() + rate;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                if !event::poll(left).map_err(|e| e.to_string())? {
                    break;
                }
                if let Event::Key(k) = event::read().map_err(|e| e.to_string())? {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                        return Ok(());
                    }
                }
            }
            previous = std::mem::replace(&mut current, scrape()?);
            since = Instant::now() - rate;
        }
    })();
    ratatui::restore();
    result
}

/// What the dashboard and the JSON lines show of one `/v1/metrics` scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    success: f64,
    error: f64,
    failure: f64,
    active: f64,
    audit_events: f64,
    error_events: f64,
    /// Response-time histogram: (upper bound in seconds, cumulative count).
    latency: Vec<(f64, f64)>,
    /// Key-store command latency, the same way (where slow requests come
    /// from).
    store: Vec<(f64, f64)>,
    latency_sum: f64,
    latency_count: f64,
    uptime: f64,
    heap: f64,
    heap_objects: f64,
    stack: f64,
    cpus: f64,
    cpus_used: f64,
    threads: f64,
}

impl Snapshot {
    /// Reads the Prometheus text exposition our server writes; request
    /// counters are summed over their `code` labels.
    pub fn parse(text: &str) -> Self {
        let mut s = Self::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            match name {
                "kes_http_request_success" => s.success += value,
                "kes_http_request_error" => s.error += value,
                "kes_http_request_failure" => s.failure += value,
                "kes_http_request_active" => s.active = value,
                "kes_log_audit_events" => s.audit_events = value,
                "kes_log_error_events" => s.error_events = value,
                "kes_http_response_time_bucket" | "kes_keystore_latency_seconds_bucket" => {
                    let le = labels.split("le=\"").nth(1).and_then(|r| r.split('"').next());
                    let bound = match le {
                        Some("+Inf") => f64::INFINITY,
                        Some(b) => b.parse().unwrap_or(f64::NAN),
                        None => continue,
                    };
                    match name {
                        "kes_http_response_time_bucket" => s.latency.push((bound, value)),
                        _ => s.store.push((bound, value)),
                    }
                }
                "kes_http_response_time_sum" => s.latency_sum = value,
                "kes_http_response_time_count" => s.latency_count = value,
                "kes_system_up_time" => s.uptime = value,
                "kes_system_mem_heap_used" => s.heap = value,
                "kes_system_mem_heap_objects" => s.heap_objects = value,
                "kes_system_mem_stack_used" => s.stack = value,
                "kes_system_num_cpu" => s.cpus = value,
                "kes_system_num_cpu_used" => s.cpus_used = value,
                "kes_system_num_threads" => s.threads = value,
                _ => {}
            }
        }
        s.latency.sort_by(|a, b| a.0.total_cmp(&b.0));
        s.store.sort_by(|a, b| a.0.total_cmp(&b.0));
        s
    }

    /// KES's piped `kes metric` object: counters, the histogram keyed by
    /// bucket bound in Go duration nanoseconds, uptime in nanoseconds.
    pub fn to_json(&self) -> Value {
        let buckets: Map<String, Value> = self
            .latency
            .iter()
            .filter(|(b, _)| b.is_finite())
            .map(|(b, n)| (((b * 1e9).round() as u64).to_string(), json!(*n as u64)))
            .collect();
        json!({
            "kes_http_request_success": self.success as u64,
            "kes_http_request_error": self.error as u64,
            "kes_http_request_failure": self.failure as u64,
            "kes_http_request_active": self.active as u64,
            "kes_log_audit_events": self.audit_events as u64,
            "kes_log_error_events": self.error_events as u64,
            "kes_http_response_time": buckets,
            "kes_system_up_time": (self.uptime * 1e9) as u64,
            "kes_system_num_cpu": self.cpus as u64,
            "kes_system_num_cpu_used": self.cpus_used as u64,
            "kes_system_num_threads": self.threads as u64,
            "kes_system_mem_heap_used": self.heap as u64,
            "kes_system_mem_heap_objects": self.heap_objects as u64,
            "kes_system_mem_stack_used": self.stack as u64,
        })
    }

    fn total(&self) -> f64 {
        self.success + self.error + self.failure
    }
}

/// One frame: request counts and rates, the latency distribution of the
/// last interval (of all requests on the first frame), and system facts.
pub fn draw(f: &mut Frame, endpoint: &str, before: &Snapshot, now: &Snapshot, secs: f64) {
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Length(1), Constraint::Length(8), Constraint::Min(8)])
        .split(f.area());
    let title = format!(" kes metric · {endpoint} · q to quit ");
    f.render_widget(Paragraph::new(Line::from(title).bold()), rows[0]);
    let cols = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
        .split(rows[1]);
    f.render_widget(requests(before, now, secs), cols[0]);
    f.render_widget(system(now), cols[1]);
    let charts = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(60), Constraint::Percentage(40)])
        .split(rows[2]);
    let title = " Latency (requests in the last interval) ";
    let chart = histogram_chart(title, &before.latency, &now.latency, charts[0].width);
    f.render_widget(chart, charts[0]);
    let title = " Key store latency ";
    f.render_widget(histogram_chart(title, &before.store, &now.store, charts[1].width), charts[1]);
}

fn requests(before: &Snapshot, now: &Snapshot, secs: f64) -> Paragraph<'static> {
    let total = now.total().max(1.0);
    let pct = |n: f64| 100.0 * n / total;
    let rate = if secs > 0.0 { (now.total() - before.total()).max(0.0) / secs } else { 0.0 };
    let avg = if now.latency_count > 0.0 { now.latency_sum / now.latency_count } else { 0.0 };
    let lines = vec![
        Line::from(format!("OK    [2xx]  {:>10}  {:>5.1}%", now.success, pct(now.success)))
            .fg(Color::Green),
        Line::from(format!("Err   [4xx]  {:>10}  {:>5.1}%", now.error, pct(now.error)))
            .fg(Color::Yellow),
        Line::from(format!("Err   [5xx]  {:>10}  {:>5.1}%", now.failure, pct(now.failure)))
            .fg(Color::Red),
        Line::from(format!("Active       {:>10}", now.active)),
        Line::from(format!("Req/s        {rate:>10.1}")),
        Line::from(format!("Avg latency  {:>10}", human_seconds(avg))),
    ];
    Paragraph::new(lines).block(Block::bordered().title(" Requests "))
}

fn system(now: &Snapshot) -> Paragraph<'static> {
    let lines = vec![
        Line::from(format!("Uptime   {}", human_seconds(now.uptime))),
        Line::from(format!("Heap     {} ({} objects)", human_bytes(now.heap), now.heap_objects)),
        Line::from(format!("Stack    {}", human_bytes(now.stack))),
        Line::from(format!("CPUs     {} of {}", now.cpus_used, now.cpus)),
        Line::from(format!("Threads  {}", now.threads)),
        Line::from(format!("Events   {} audit, {} error", now.audit_events, now.error_events)),
    ];
    Paragraph::new(lines).block(Block::bordered().title(" System "))
}

/// Width of one bar and the gap after it.
const BAR: u16 = 6;
const GAP: u16 = 1;

/// Events per bucket in the interval (histograms are cumulative over
/// buckets and over time, so both differences are taken), for the run of
/// buckets that holds them: empty buckets at either end are left out (the
/// server answers in microseconds; most of KES's buckets stay empty), and
/// when more remain than fit in `width`, the emptier end gives way.
fn histogram_chart(
    title: &'static str,
    before: &[(f64, f64)],
    now: &[(f64, f64)],
    width: u16,
) -> BarChart<'static> {
    let in_interval = |i: usize| {
        let b = before.get(i).map_or(0.0, |x| x.1);
        (now[i].1 - b).max(0.0)
    };
    let mut counts = Vec::with_capacity(now.len());
    let mut below = 0.0;
    for (i, (bound, _)) in now.iter().enumerate() {
        let cumulative = in_interval(i);
        counts.push((*bound, (cumulative - below).max(0.0)));
        below = cumulative;
    }
    let fit = (width.saturating_sub(2) / (BAR + GAP)).max(1) as usize;
    // Nothing in the interval: the first buckets, as an empty scale.
    let first = counts.iter().position(|c| c.1 > 0.0).unwrap_or(0);
    let last = counts.iter().rposition(|c| c.1 > 0.0).unwrap_or(fit.saturating_sub(1));
    let (mut lo, mut hi) = (first, last.min(counts.len().saturating_sub(1)).max(first));
    while hi + 1 - lo > fit {
        if counts[lo].1 <= counts[hi].1 {
            lo += 1;
        } else {
            hi -= 1;
        }
    }
    let bars: Vec<Bar> = counts
        .get(lo..(hi + 1).min(counts.len()))
        .unwrap_or_default()
        .iter()
        .map(|(bound, n)| {
            let label = if bound.is_finite() {
                format!("≤{}", short_seconds(*bound))
            } else {
                "more".into()
            };
            Bar::default().value(*n as u64).label(Line::from(label))
        })
        .collect();
    BarChart::default()
        .block(Block::bordered().title(title))
        .data(BarGroup::default().bars(&bars))
        .bar_width(BAR)
        .bar_gap(GAP)
        .bar_style(Style::default().fg(Color::Cyan))
}

/// A bucket bound in at most five characters: `50µs`, `2.5ms`, `1.5s`.
fn short_seconds(s: f64) -> String {
    let (v, unit) = match s {
        s if s >= 1.0 => (s, "s"),
        s if s >= 0.001 => (s * 1e3, "ms"),
        s => (s * 1e6, "µs"),
    };
    let text = format!("{v:.1}");
    format!("{}{unit}", text.trim_end_matches('0').trim_end_matches('.'))
}

fn human_seconds(s: f64) -> String {
    match s {
        s if s >= 86_400.0 => {
            format!("{:.0}d{:.0}h", (s / 86_400.0).floor(), (s % 86_400.0) / 3600.0)
        }
        s if s >= 3600.0 => format!("{:.0}h{:.0}m", (s / 3600.0).floor(), (s % 3600.0) / 60.0),
        s if s >= 60.0 => format!("{:.0}m{:.0}s", (s / 60.0).floor(), s % 60.0),
        s if s >= 1.0 => format!("{s:.1}s"),
        s if s >= 0.001 => format!("{:.0}ms", s * 1e3),
        s => format!("{:.0}µs", s * 1e6),
    }
}

fn human_bytes(b: f64) -> String {
    match b {
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB", b / 1e3),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    const SCRAPE: &str = "\
# TYPE kes_http_request_success counter
kes_http_request_success{code=\"200\"} 90
kes_http_request_success{code=\"204\"} 10
kes_http_request_error{code=\"403\"} 7
kes_http_request_failure{code=\"503\"} 3
kes_http_request_active 2
kes_http_response_time_bucket{le=\"0.01\"} 100
kes_http_response_time_bucket{le=\"0.05\"} 108
kes_http_response_time_bucket{le=\"+Inf\"} 110
kes_http_response_time_sum 0.5
kes_http_response_time_count 110
kes_log_audit_events 110
kes_log_error_events 1
kes_system_up_time 3725.50
kes_system_mem_heap_used 2500000
kes_system_mem_heap_objects 1234
kes_system_num_cpu 2
kes_system_num_cpu_used 1
kes_system_num_threads 4
";

    #[test]
    fn scrape_to_kes_json() {
        let s = Snapshot::parse(SCRAPE);
        let v = s.to_json();
        assert_eq!(v["kes_http_request_success"], 100);
        assert_eq!(v["kes_http_request_error"], 7);
        assert_eq!(v["kes_http_request_failure"], 3);
        assert_eq!(v["kes_http_request_active"], 2);
        assert_eq!(v["kes_http_response_time"], json!({"10000000": 100, "50000000": 108}));
        assert_eq!(v["kes_system_up_time"], 3_725_500_000_000u64);
        assert_eq!(v["kes_system_num_threads"], 4);
    }

    fn render(before: &Snapshot, now: &Snapshot) -> String {
        let mut t = Terminal::new(TestBackend::new(100, 24)).unwrap();
        t.draw(|f| draw(f, "kes.example:7373", before, now, 5.0)).unwrap();
        let buf = t.backend().buffer().clone();
        let area = buf.area;
        let mut out = String::new();
        for y in 0..area.height {
            for x in 0..area.width {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    /// A loaded server's requests (the load benchmark's spread: p50 about
    /// 0.5 ms, p99 about 3 ms) and store calls, as the core exposes them:
    /// the latency panel spreads them over several bars.
    #[test]
    fn a_loaded_servers_latencies_spread_over_several_bars() {
        use std::time::Duration;
        let mut m = kes_core::metrics::Metrics::default();
        let before = Snapshot::parse(&m.render(0, Duration::ZERO, &Default::default()));
        for (us, n) in
            [(40, 120), (90, 300), (200, 700), (400, 900), (800, 500), (2000, 150), (4000, 30)]
        {
            for _ in 0..n {
                m.observe(200, Duration::from_micros(us));
            }
        }
        for (us, n) in [(300, 40), (800, 25), (3000, 9)] {
            for _ in 0..n {
                m.observe_store(Duration::from_micros(us));
            }
        }
        let now = Snapshot::parse(&m.render(0, Duration::from_secs(5), &Default::default()));
        let frame = render(&before, &now);
        if std::env::var_os("SHOW_FRAME").is_some() {
            eprintln!("{frame}");
        }
        for want in
            ["≤50µs", "≤100µs", "≤250µs", "≤500µs", "≤1ms", "≤2.5ms", "≤5ms", "Key store latency"]
        {
            assert!(frame.contains(want), "missing {want:?} in\n{frame}");
        }
        for count in ["120", "300", "700", "900", "500", "150"] {
            assert!(frame.contains(count), "bar {count} missing in\n{frame}");
        }
        // The store panel shows its calls, in its own buckets.
        assert!(frame.contains("≤1ms") && frame.contains("40") && frame.contains("25"), "{frame}");
        // Nothing in the interval: an empty scale, no panic.
        let _ = render(&now, &now);
        let _ = render(&Snapshot::default(), &Snapshot::default());
    }

    #[test]
    fn bucket_labels() {
        let labels: Vec<String> =
            [0.00005, 0.00025, 0.001, 0.0025, 0.01, 1.5, 10.0].map(short_seconds).to_vec();
        assert_eq!(labels, ["50µs", "250µs", "1ms", "2.5ms", "10ms", "1.5s", "10s"]);
    }

    #[test]
    fn one_rendered_frame() {
        let now = Snapshot::parse(SCRAPE);
        let mut before = now.clone();
        before.success -= 50.0; // 50 more successes in 5 s
        for b in &mut before.latency {
            b.1 -= 50.0;
        }
        let frame = render(&before, &now);
        for want in [
            "kes.example:7373",
            "OK    [2xx]         100   90.9%",
            "Err   [4xx]           7    6.4%",
            "Err   [5xx]           3    2.7%",
            "Req/s              10.0",
            "Uptime   1h2m",
            "Heap     2.5 MB (1234 objects)",
            "CPUs     1 of 2",
            "Latency",
            "≤10ms",
        ] {
            assert!(frame.contains(want), "missing {want:?} in\n{frame}");
        }
        // The 50 requests of the interval all fell into the first bucket.
        assert!(frame.contains("50"), "{frame}");
    }
}
