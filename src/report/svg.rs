//! Hand-made inline SVG charts for the HTML report: no scripts, no external resources,
//! every text escaped. Colours come from the report's CSS classes.

use std::fmt::Write;

/// Escapes text for XML (SVG text and attributes).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const W: f64 = 760.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;

/// Per pixel column of a polyline (pixel coordinates, x increasing), its first,
/// lowest, highest and last point, in order: then `simplify` thins it to what a chart
/// can show (at half a pixel the drawn shape is unchanged).
fn column_extremes(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut kept: Vec<(f64, f64)> = Vec::with_capacity(points.len().min(4 * W as usize));
    let mut i = 0;
    while i < points.len() {
        let col = points[i].0.floor();
        let n = points[i..]
            .iter()
            .take_while(|p| p.0.floor() == col)
            .count();
        let group = &points[i..i + n];
        let lo = group
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.1.total_cmp(&b.1.1));
        let hi = group
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.1.total_cmp(&b.1.1));
        let mut pick: Vec<usize> = vec![0, n - 1];
        pick.extend(lo.map(|p| p.0));
        pick.extend(hi.map(|p| p.0));
        pick.sort_unstable();
        pick.dedup();
        kept.extend(pick.into_iter().map(|j| group[j]));
        i += n;
    }
    kept
}

/// Ramer–Douglas–Peucker: the fewest points whose polyline stays within `eps` pixels of
/// the original (an EWMA line's long decays and flat stretches become a few segments).
fn simplify(points: &[(f64, f64)], eps: f64) -> Vec<(f64, f64)> {
    if points.len() < 3 {
        return points.to_vec();
    }
    let mut keep = vec![false; points.len()];
    keep[0] = true;
    keep[points.len() - 1] = true;
    let mut stack = vec![(0, points.len() - 1)];
    while let Some((a, b)) = stack.pop() {
        let (pa, pb) = (points[a], points[b]);
        let (dx, dy) = (pb.0 - pa.0, pb.1 - pa.1);
        let len = dx.hypot(dy);
        let dist = |p: (f64, f64)| {
            if len == 0.0 {
                (p.0 - pa.0).hypot(p.1 - pa.1)
            } else {
                ((p.0 - pa.0) * dy - (p.1 - pa.1) * dx).abs() / len
            }
        };
        let far = (a + 1..b)
            .map(|i| (i, dist(points[i])))
            .max_by(|x, y| x.1.total_cmp(&y.1));
        if let Some((i, d)) = far
            && d > eps
        {
            keep[i] = true;
            stack.push((a, i));
            stack.push((i, b));
        }
    }
    points
        .iter()
        .zip(keep)
        .filter_map(|(p, k)| k.then_some(*p))
        .collect()
}

/// Most points one line of a chart draws: a noisy line is simplified further (up to
/// 4 px) until it fits, which bounds a report's size by its number of charts.
const MAX_LINE_POINTS: usize = 400;

/// The SVG path data of a line drawn in runs (gaps between them): thinned, in whole
/// pixels, each run an absolute move then relative line-tos.
fn line_path(runs: &[&[(f64, f64)]]) -> String {
    // The column pass once; only the simplification is redone at a coarser tolerance.
    let columns: Vec<Vec<(f64, f64)>> = runs.iter().map(|r| column_extremes(r)).collect();
    let mut eps = 0.5;
    let mut thinned: Vec<Vec<(f64, f64)>>;
    loop {
        thinned = columns.iter().map(|c| simplify(c, eps)).collect();
        if thinned.iter().map(Vec::len).sum::<usize>() <= MAX_LINE_POINTS || eps >= 4.0 {
            break;
        }
        eps *= 2.0;
    }
    let mut path = String::new();
    for run in thinned.iter().filter(|r| r.len() > 1) {
        let mut at = (run[0].0.round() as i64, run[0].1.round() as i64);
        let _ = write!(path, "M{},{}l", at.0, at.1);
        for (i, p) in run[1..].iter().enumerate() {
            let q = (p.0.round() as i64, p.1.round() as i64);
            let (dx, dy) = (q.0 - at.0, q.1 - at.1);
            // A negative number needs no separator before it.
            if i > 0 && dx >= 0 {
                path.push(' ');
            }
            let _ = write!(path, "{dx}");
            if dy >= 0 {
                path.push(',');
            }
            let _ = write!(path, "{dy}");
            at = q;
        }
    }
    path
}

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten, at least `x`.
fn nice_max(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|v| *v >= x * 0.999_999)
        .unwrap_or(10.0 * p)
}

fn fmt_tick(v: f64) -> String {
    if v == v.trunc() {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

struct Frame {
    h: f64,
    plot_h: f64,
    /// Top of the plot area (below the legend rows).
    top: f64,
}

impl Frame {
    /// A frame whose legend (drawn on top) needs `legend_rows` rows, a plot of
    /// `plot_h`, and `below` pixels under the plot for ticks and labels.
    fn new(legend_rows: usize, plot_h: f64, below: f64) -> Frame {
        let top = 12.0 + 18.0 * legend_rows as f64 + 6.0;
        Frame {
            h: top + plot_h + below,
            plot_h,
            top,
        }
    }
    fn x0(&self) -> f64 {
        LEFT
    }
    fn x1(&self) -> f64 {
        W - RIGHT
    }
    fn y0(&self) -> f64 {
        self.top + self.plot_h
    }
}

fn open_svg(out: &mut String, h: f64, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(title)
    );
}

/// Tick intervals for a `nice_max` bound: fifths of 1 and 5 (x10^k), quarters of 2.
fn intervals(ymax: f64) -> usize {
    let mantissa = ymax / 10f64.powf(ymax.log10().floor());
    if (mantissa - 2.0).abs() < 1e-9 { 4 } else { 5 }
}

/// Y axis with ticks from 0 to `ymax`, grid lines, and a rotated label.
fn y_axis(out: &mut String, f: &Frame, ymax: f64, label: &str) {
    let n = intervals(ymax);
    let mut grid = String::new();
    for i in 0..=n {
        let v = ymax * i as f64 / n as f64;
        let y = f.y0() - f.plot_h * i as f64 / n as f64;
        let _ = write!(grid, "M{},{y:.1}H{}", f.x0(), f.x1());
        let _ = write!(
            out,
            r#"<text class="tick end" x="{tx}" y="{ty:.1}">{v}</text>"#,
            tx = f.x0() - 6.0,
            ty = y + 4.0,
            v = esc(&fmt_tick(v))
        );
    }
    let _ = write!(out, r#"<path class="grid" d="{grid}"/>"#);
    let cy = f.top + f.plot_h / 2.0;
    let _ = write!(
        out,
        r#"<text class="axis-label" x="14" y="{cy:.1}" transform="rotate(-90 14 {cy:.1})">{}</text>"#,
        esc(label)
    );
    let _ = write!(
        out,
        r#"<line class="axis" x1="{x0}" y1="{top}" x2="{x0}" y2="{y0}"/><line class="axis" x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}"/>"#,
        top = f.top,
        x0 = f.x0(),
        x1 = f.x1(),
        y0 = f.y0()
    );
}

fn legend_width(label: &str) -> f64 {
    26.0 + 7.0 * label.chars().count() as f64
}

/// Rows the legend needs within the chart width.
fn legend_rows(items: &[(&str, &str)]) -> usize {
    let mut rows = 1;
    let mut x = LEFT;
    for (_, label) in items {
        if x + legend_width(label) > W - RIGHT && x > LEFT {
            rows += 1;
            x = LEFT;
        }
        x += legend_width(label);
    }
    rows
}

/// Legend entries (css class, label) above the plot, wrapped to the chart width.
fn legend(out: &mut String, items: &[(&str, &str)]) {
    let mut x = LEFT;
    let mut y = 10.0;
    for (class, label) in items {
        if x + legend_width(label) > W - RIGHT && x > LEFT {
            x = LEFT;
            y += 18.0;
        }
        let _ = write!(
            out,
            r#"<rect class="{class} legend-key" x="{x:.1}" y="{y}" width="14" height="10"/><text class="legend" x="{tx:.1}" y="{ty}">{l}</text>"#,
            tx = x + 18.0,
            ty = y + 9.0,
            l = esc(label)
        );
        x += legend_width(label);
    }
}

/// One host's rate series for the time chart.
pub struct RateSeries<'a> {
    pub label: &'a str,
    pub class: &'a str,
    /// (epoch µs, ratio 0..1) points; `None` is an empty bucket (a gap).
    pub points: Vec<(i64, Option<f64>)>,
}

/// A shaded time span (incident) with its label.
pub struct Span {
    pub start_us: i64,
    pub end_us: i64,
    pub label: String,
}

/// The EWMA failure rates over the window (in %), incident spans shaded, change points
/// (incident starts and ends) dashed, and breaker-open spans drawn in a strip below.
pub fn rate_chart(
    title: &str,
    window: (i64, i64),
    series: &[RateSeries<'_>],
    incidents: &[Span],
    opens: &[(i64, i64)],
) -> String {
    let mut items: Vec<(&str, &str)> = series.iter().map(|s| (s.class, s.label)).collect();
    items.push(("incident", "incident"));
    items.push(("open", "breaker open"));
    let f = Frame::new(legend_rows(&items), 160.0, 60.0);
    let mut out = String::new();
    open_svg(&mut out, f.h, title);
    let (t0, t1) = (window.0 as f64, window.1.max(window.0 + 1) as f64);
    let x = |t: i64| f.x0() + (t as f64 - t0) / (t1 - t0) * (f.x1() - f.x0());
    let peak = series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .fold(0.0f64, f64::max);
    let ymax = nice_max(peak * 100.0);
    let y = |r: f64| f.y0() - (r * 100.0 / ymax).min(1.0) * f.plot_h;
    for s in incidents {
        let (a, b) = (x(s.start_us.max(window.0)), x(s.end_us.min(window.1)));
        let _ = write!(
            out,
            r#"<rect class="incident" x="{a:.1}" y="{top}" width="{w:.1}" height="{h}"><title>{t}</title></rect>"#,
            top = f.top,
            w = (b - a).max(1.0),
            h = f.plot_h,
            t = esc(&s.label)
        );
    }
    y_axis(&mut out, &f, ymax, "failure rate, EWMA (%)");
    // Time ticks every 3 hours (or a sixth of a short window), in UTC.
    let span_s = (t1 - t0) / 1e6;
    let step_s = if span_s >= 6.0 * 3600.0 {
        3.0 * 3600.0
    } else {
        (span_s / 6.0).max(60.0)
    };
    let first = ((t0 / 1e6 / step_s).ceil() * step_s * 1e6) as i64;
    let mut t = first;
    let mut marks = String::new();
    while (t as f64) <= t1 {
        let label = chrono::DateTime::from_timestamp_micros(t)
            .map(|d| d.format("%H:%M").to_string())
            .unwrap_or_default();
        let _ = write!(marks, "M{xx:.1},{y0}v5", xx = x(t), y0 = f.y0());
        let _ = write!(
            out,
            r#"<text class="tick" x="{xx:.1}" y="{ty}">{l}</text>"#,
            xx = x(t),
            ty = f.y0() + 18.0,
            l = esc(&label)
        );
        t += (step_s * 1e6) as i64;
    }
    if !marks.is_empty() {
        let _ = write!(out, r#"<path class="axis" d="{marks}"/>"#);
    }
    let _ = write!(
        out,
        r#"<text class="axis-label" x="{cx}" y="{ly}">time (UTC)</text>"#,
        cx = (f.x0() + f.x1()) / 2.0,
        ly = f.h - 4.0
    );
    let mut edges = String::new();
    for s in incidents {
        for edge in [s.start_us, s.end_us] {
            if edge > window.0 && edge < window.1 {
                let _ = write!(edges, "M{:.1},{}V{}", x(edge), f.top, f.y0());
            }
        }
    }
    if !edges.is_empty() {
        let _ = write!(out, r#"<path class="changepoint" d="{edges}"/>"#);
    }
    for s in series {
        // Buckets without calls leave gaps; a gap narrower than 3 px is bridged (a
        // sparse host's line would otherwise break into dots). Each run, in pixels, is
        // thinned to what the chart can show.
        let px: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter_map(|(t, r)| r.map(|r| (x(*t), y(r))))
            .collect();
        let mut runs: Vec<&[(f64, f64)]> = Vec::new();
        let mut start = 0;
        for i in 1..=px.len() {
            if i == px.len() || px[i].0 - px[i - 1].0 > 3.0 {
                runs.push(&px[start..i]);
                start = i;
            }
        }
        let path = line_path(&runs);
        if !path.is_empty() {
            let _ = write!(
                out,
                r#"<path class="line {c}" d="{d}"/>"#,
                c = s.class,
                d = path
            );
        }
    }
    // Breaker-open strip.
    let strip_y = f.y0() + 24.0;
    let _ = write!(
        out,
        r#"<text class="tick end" x="{tx}" y="{ty}">open</text><rect class="strip" x="{x0}" y="{strip_y}" width="{w}" height="8"/>"#,
        tx = f.x0() - 6.0,
        ty = strip_y + 8.0,
        x0 = f.x0(),
        w = f.x1() - f.x0()
    );
    // Opens closer than a pixel share one mark (a fleet's breakers open together); all
    // marks are one path.
    let mut spans: Vec<(f64, f64)> = opens
        .iter()
        .map(|(a, b)| (x((*a).max(window.0)), x((*b).min(window.1))))
        .collect();
    spans.sort_by(|p, q| p.0.total_cmp(&q.0));
    let mut marks: Vec<(f64, f64)> = Vec::new();
    for (xa, xb) in spans {
        let xb = xb.max(xa + 1.5);
        match marks.last_mut() {
            Some(m) if xa <= m.1 + 1.0 => m.1 = m.1.max(xb),
            _ => marks.push((xa, xb)),
        }
    }
    if !marks.is_empty() {
        let mut d = String::new();
        for (xa, xb) in marks {
            let _ = write!(d, "M{xa:.1},{strip_y}h{:.1}v8h{:.1}z", xb - xa, xa - xb);
        }
        let _ = write!(out, r#"<path class="open" d="{d}"/>"#);
    }
    legend(&mut out, &items);
    out.push_str("</svg>");
    out
}

/// A vertical marker on a histogram at a fractional bin position (0 is the left edge
/// of the first bin), with its css class and legend label.
pub struct Marker {
    pub pos: f64,
    pub class: &'static str,
    pub label: String,
}

/// The bins of a histogram: their labels, and whether a label names the bin (centred,
/// for discrete values) or its lower edge (for binned continuous values).
pub struct Bins {
    pub labels: Vec<String>,
    pub edge_labels: bool,
}

/// A histogram of stacked groups (css class, label, count per bin) with markers.
pub fn histogram(
    title: &str,
    x_label: &str,
    y_label: &str,
    bins: &Bins,
    groups: &[(&str, &str, Vec<u64>)],
    markers: &[Marker],
) -> String {
    let mut items: Vec<(&str, &str)> = groups.iter().map(|g| (g.0, g.1)).collect();
    for m in markers {
        items.push((m.class, m.label.as_str()));
    }
    let f = Frame::new(legend_rows(&items), 150.0, 44.0);
    let mut out = String::new();
    open_svg(&mut out, f.h, title);
    let n = bins.labels.len().max(1);
    let totals: Vec<u64> = (0..n)
        .map(|i| {
            groups
                .iter()
                .map(|g| g.2.get(i).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let ymax = nice_max(totals.iter().copied().max().unwrap_or(0).max(4) as f64);
    y_axis(&mut out, &f, ymax, y_label);
    let bw = (f.x1() - f.x0()) / n as f64;
    let label_every = (n as f64 / 16.0).ceil().max(1.0) as usize;
    for i in 0..n {
        let mut base = 0u64;
        for (class, label, values) in groups {
            let v = values.get(i).copied().unwrap_or(0);
            if v > 0 {
                let y_top = f.y0() - (base + v) as f64 / ymax * f.plot_h;
                let hgt = v as f64 / ymax * f.plot_h;
                let _ = write!(
                    out,
                    r#"<rect class="{class}" x="{xx:.1}" y="{y_top:.1}" width="{w:.1}" height="{hgt:.1}"><title>{t}</title></rect>"#,
                    xx = f.x0() + i as f64 * bw + 1.0,
                    w = (bw - 2.0).max(1.0),
                    t = esc(&format!("{}: {v} ({label})", bins.labels[i]))
                );
            }
            base += v;
        }
        if i % label_every == 0 {
            let offset = if bins.edge_labels { 0.0 } else { 0.5 };
            let _ = write!(
                out,
                r#"<text class="tick" x="{xx:.1}" y="{ty}">{l}</text>"#,
                xx = f.x0() + (i as f64 + offset) * bw,
                ty = f.y0() + 16.0,
                l = esc(&bins.labels[i])
            );
        }
    }
    let _ = write!(
        out,
        r#"<text class="axis-label" x="{cx}" y="{ly}">{l}</text>"#,
        cx = (f.x0() + f.x1()) / 2.0,
        ly = f.y0() + 36.0,
        l = esc(x_label)
    );
    for m in markers {
        let xx = f.x0() + m.pos.clamp(0.0, n as f64) * bw;
        let _ = write!(
            out,
            r#"<line class="marker {c}" x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{y0}"><title>{t}</title></line>"#,
            c = m.class,
            top = f.top,
            y0 = f.y0(),
            t = esc(&m.label)
        );
    }
    legend(&mut out, &items);
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_bounds_and_escaping() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(12.0), 20.0);
        assert_eq!(nice_max(100.0), 100.0);
        assert_eq!(esc("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }

    #[test]
    fn thinning_stays_within_half_a_pixel_and_drops_flat_runs() {
        // 4,000 points over 100 px: a flat start, then a zigzag.
        let pts: Vec<(f64, f64)> = (0..4000)
            .map(|i| {
                let x = i as f64 / 40.0;
                let y = if i < 2000 {
                    50.0
                } else {
                    50.0 + (i % 7) as f64
                };
                (x, y)
            })
            .collect();
        let thin = simplify(&column_extremes(&pts), 0.5);
        assert!(thin.len() <= 4 * 100, "{}", thin.len());
        assert!(
            thin.len() < 4 * 50 + 4,
            "the flat half is two points: {}",
            thin.len()
        );
        assert_eq!(thin.first(), pts.first());
        assert_eq!(thin.last(), pts.last());
        let ys = |v: &[(f64, f64)]| {
            v.iter()
                .fold((f64::MAX, f64::MIN), |m, p| (m.0.min(p.1), m.1.max(p.1)))
        };
        assert_eq!(ys(&thin), ys(&pts), "peaks survive");
    }

    #[test]
    fn simplified_lines_stay_within_half_a_pixel() {
        // A noisy decay, 2 points per pixel.
        let pts: Vec<(f64, f64)> = (0..1400)
            .map(|i| {
                let x = i as f64 / 2.0;
                (
                    x,
                    100.0 * (-x / 80.0).exp() + ((i * 7919) % 13) as f64 / 10.0,
                )
            })
            .collect();
        let thin = simplify(&pts, 0.5);
        assert!(thin.len() < pts.len() / 2, "{}", thin.len());
        for p in &pts {
            let d = thin
                .windows(2)
                .map(|w| {
                    let (a, b) = (w[0], w[1]);
                    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
                    let t = (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / (dx * dx + dy * dy))
                        .clamp(0.0, 1.0);
                    (p.0 - a.0 - t * dx).hypot(p.1 - a.1 - t * dy)
                })
                .fold(f64::MAX, f64::min);
            assert!(d <= 0.5 + 1e-9, "{p:?} is {d} px away");
        }
    }
}
