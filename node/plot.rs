//! Latency by percentile, as HdrHistogram draws it: `meshrpc bench --plot FILE.svg` and
//! `--hgrm FILE`, and `meshrpc bench-plot A.json B.json -o FILE.svg` to compare runs. The x
//! axis is the percentile on HdrHistogram's log scale, 1/(1 - p): p50 at 2, p90 at 10, p99
//! at 100 ... p99.999 at 100 000; the y axis is the latency.

use std::path::Path;

use crate::load::{Percentile, Report};
use anyhow::{ensure, Context};
use plotters::prelude::*;

/// The furthest percentile drawn: 99.999 %.
const MAX_NINES: f64 = 5.0;

/// `report` in HdrHistogram's `.hgrm` percentile format (values in milliseconds), which
/// its plotting tools read.
pub fn hgrm(report: &Report) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    for p in &report.percentiles {
        let inverse = if p.quantile < 1.0 {
            format!("{:14.2}", 1.0 / (1.0 - p.quantile))
        } else {
            format!("{:>14}", "inf")
        };
        out.push_str(&format!(
            "{:12.3} {:14.12} {:10} {inverse}\n",
            p.value_us as f64 / 1000.0,
            p.quantile,
            p.count
        ));
    }
    let total = report.percentiles.last().map_or(0, |p| p.count);
    out.push_str(&format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]\n",
        report.mean_us / 1000.0,
        report.stdev_us / 1000.0,
        report.max_us as f64 / 1000.0,
        total
    ));
    out
}

/// Where a percentile sits on the x axis: the number of nines, log10(1 / (1 - p)).
fn nines(quantile: f64) -> f64 {
    (1.0 / (1.0 - quantile.min(1.0 - 1e-9))).log10()
}

fn points(percentiles: &[Percentile]) -> Vec<(f64, f64)> {
    percentiles
        .iter()
        .filter(|p| p.quantile >= 0.5)
        .map(|p| (nines(p.quantile).min(MAX_NINES), p.value_us as f64))
        .collect()
}

/// `50%`, `90%`, `99%`, `99.9%` ... for the ticks at 0.3, 1, 2, 3 nines.
fn tick(x: f64) -> String {
    let quantile = 1.0 - 10f64.powf(-x);
    let percent = quantile * 100.0;
    let decimals = (x.round() as usize).saturating_sub(2);
    format!("{percent:.decimals$}%")
}

/// Draws each `(label, report)` as one curve into the SVG file `path`.
pub fn svg(series: &[(String, Report)], path: &Path) -> anyhow::Result<()> {
    ensure!(!series.is_empty(), "nothing to plot");
    for (label, report) in series {
        ensure!(
            !report.percentiles.is_empty(),
            "{label} has no latency distribution (a report from a meshrpc older than --plot?)"
        );
    }
    let max_us = series
        .iter()
        .flat_map(|(_, r)| points(&r.percentiles))
        .map(|(_, y)| y)
        .fold(1.0f64, f64::max);
    let (unit, scale) = if max_us >= 10_000.0 {
        ("ms", 1000.0)
    } else {
        ("µs", 1.0)
    };
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("latency by percentile", ("sans-serif", 22))
            .margin(18)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(nines(0.5)..MAX_NINES, 0.0..max_us / scale * 1.08)?;
        chart
            .configure_mesh()
            .x_labels(7)
            .x_label_formatter(&|x| tick(*x))
            .x_desc("percentile")
            .y_desc(format!("latency ({unit})"))
            .draw()?;
        for (i, (label, report)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let line: Vec<(f64, f64)> = points(&report.percentiles)
                .into_iter()
                .map(|(x, y)| (x, y / scale))
                .collect();
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))?
                .label(label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot draw {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_read_as_percentiles() {
        assert_eq!(tick(nines(0.5)), "50%");
        assert_eq!(tick(1.0), "90%");
        assert_eq!(tick(2.0), "99%");
        assert_eq!(tick(3.0), "99.9%");
        assert_eq!(tick(5.0), "99.999%");
    }
}
