//! Learning curves: mean return and KL against environment steps, as SVG and PNG.
//!
//! Text is rendered with a system TrueType font found through fontconfig (plotters' `ttf`
//! feature). A machine without any font makes drawing fail with [`PlotError::Draw`], whose
//! message says to install one; the metrics file is unaffected and the plot can be redrawn
//! later from it.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::run::atomic_write::{AtomicWriteError, write_atomic};
use crate::run::metrics::IterationMetrics;

/// Why the curves could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// plotters failed while drawing into `path`.
    #[error(
        "cannot draw learning curves into {}: {reason} (text needs a TrueType font found by \
         fontconfig: install e.g. fonts-dejavu-core; the metrics are safe in metrics.jsonl)",
        path.display()
    )]
    Draw {
        /// The output file.
        path: PathBuf,
        /// plotters' error.
        reason: String,
    },
    /// Writing the SVG failed.
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
}

/// Canvas size of both outputs, in pixels.
const SIZE: (u32, u32) = (1000, 800);

/// Draws the learning curves of `metrics` into `svg_path` and `png_path`.
///
/// Top panel: mean episode return against cumulative environment steps. Bottom panel: the
/// measured KL divergence of each update against environment steps, with the trust-region
/// bound `max_kl` (δ) as a dashed line when given. Non-finite values (iterations without
/// complete episodes, skipped updates) are left out. An empty `metrics` draws empty axes.
/// The SVG is written atomically; the PNG is written by the bitmap encoder.
pub fn plot_curves(
    metrics: &[IterationMetrics],
    svg_path: &Path,
    png_path: &Path,
    max_kl: Option<f64>,
) -> Result<(), PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(root, metrics, max_kl).map_err(|reason| PlotError::Draw {
            path: svg_path.to_path_buf(),
            reason,
        })?;
    }
    write_atomic(svg_path, svg.as_bytes())?;

    let root = BitMapBackend::new(png_path, SIZE).into_drawing_area();
    draw(root, metrics, max_kl).map_err(|reason| PlotError::Draw {
        path: png_path.to_path_buf(),
        reason,
    })
}

/// `(lo, hi)` covering the finite `values`, padded by 5 % and never empty.
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        0.5 * lo.abs().max(1e-3)
    };
    (lo - pad, hi + pad)
}

/// A drawing error as text (plotters' error type depends on the backend).
fn reason<E: std::error::Error + Send + Sync>(err: DrawingAreaErrorKind<E>) -> String {
    err.to_string()
}

/// Both panels on `root`: returns above, KL below, over the same steps axis.
fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    metrics: &[IterationMetrics],
    max_kl: Option<f64>,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(reason)?;
    let panels = root.split_evenly((2, 1));
    let steps = steps_range(metrics);
    draw_returns(&panels[0], metrics, steps)?;
    draw_kl(&panels[1], metrics, steps, max_kl)?;
    root.present().map_err(reason)
}

/// Environment steps of an iteration, the x value of both panels.
fn steps(m: &IterationMetrics) -> f64 {
    m.env_steps as f64
}

/// The x range: from 0 (or the first iteration, if earlier) to the last iteration.
fn steps_range(metrics: &[IterationMetrics]) -> (f64, f64) {
    match (metrics.first(), metrics.last()) {
        (Some(first), Some(last)) if last.env_steps > first.env_steps => {
            (steps(first).min(0.0), steps(last))
        }
        (Some(only), _) => (0.0, steps(only).max(1.0)),
        _ => (0.0, 1.0),
    }
}

/// `(steps, value)` of every iteration whose value is finite.
fn finite_points(
    metrics: &[IterationMetrics],
    value: impl Fn(&IterationMetrics) -> f64,
) -> Vec<(f64, f64)> {
    metrics
        .iter()
        .map(|m| (steps(m), value(m)))
        .filter(|p| p.1.is_finite())
        .collect()
}

type Panel<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One panel's chart with its caption, axes and grid drawn (steps on x).
fn panel<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    y_desc: &str,
    (x_lo, x_hi): (f64, f64),
    (y_lo, y_hi): (f64, f64),
) -> Result<Panel<'a, DB>, String> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 26))
        .margin(12)
        .margin_right(40)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
        .map_err(reason)?;
    chart
        .configure_mesh()
        .x_desc("environment steps (all devices)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_desc)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(reason)?;
    Ok(chart)
}

/// Top panel: mean episode return, as a line with a dot per iteration; with
/// `[evaluation]`, the deterministic evaluations' mean return as a second line with a
/// legend.
fn draw_returns<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    metrics: &[IterationMetrics],
    steps: (f64, f64),
) -> Result<(), String> {
    let returns = finite_points(metrics, |m| m.mean_return);
    let evaluations = finite_points(metrics, |m| m.eval_mean_return.unwrap_or(f64::NAN));
    let y = padded_range(returns.iter().chain(&evaluations).map(|p| p.1));
    let caption = "Mean episode return";
    let mut chart = panel(
        area,
        caption,
        "mean return (sum of rewards per episode)",
        steps,
        y,
    )?;
    chart
        .draw_series(LineSeries::new(
            returns.iter().copied(),
            BLUE.stroke_width(2),
        ))
        .map_err(reason)?;
    chart
        .draw_series(returns.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
        .map_err(reason)?
        .label("training episodes (exploring)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    if evaluations.is_empty() {
        return Ok(());
    }
    let green = RGBColor(0, 140, 60);
    chart
        .draw_series(LineSeries::new(
            evaluations.iter().copied(),
            green.stroke_width(2),
        ))
        .map_err(reason)?
        .label("evaluation (deterministic)")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], green.stroke_width(2)));
    chart
        .draw_series(
            evaluations
                .iter()
                .map(|&p| Cross::new(p, 5, green.stroke_width(2))),
        )
        .map_err(reason)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(reason)?;
    Ok(())
}

/// Bottom panel: the measured KL of each update, and the trust-region bound δ dashed.
fn draw_kl<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    metrics: &[IterationMetrics],
    steps: (f64, f64),
    max_kl: Option<f64>,
) -> Result<(), String> {
    let kls = finite_points(metrics, |m| m.kl);
    let (_, kl_hi) = padded_range(kls.iter().map(|p| p.1).chain(max_kl.map(|d| d * 1.2)));
    let caption = "KL divergence of each update";
    let y = (0.0, kl_hi.max(1e-6));
    let mut chart = panel(area, caption, "mean KL(old ‖ new) (nats)", steps, y)?;
    let legend_line = |color: RGBColor| {
        move |(x, y): (i32, i32)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
    };
    chart
        .draw_series(LineSeries::new(kls.iter().copied(), RED.stroke_width(2)))
        .map_err(reason)?
        .label("measured KL")
        .legend(legend_line(RED));
    if let Some(delta) = max_kl.filter(|d| d.is_finite()) {
        let bound = [(steps.0, delta), (steps.1, delta)];
        chart
            .draw_series(DashedLineSeries::new(bound, 10, 6, BLACK.stroke_width(2)))
            .map_err(reason)?
            .label(format!("trust region δ = {delta}"))
            .legend(legend_line(BLACK));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::testdir::TestDir;

    fn curve(n: u64) -> Vec<IterationMetrics> {
        (0..n)
            .map(|i| IterationMetrics {
                iteration: i,
                env_steps: 2000 * (i + 1),
                mean_return: -1200.0 + 40.0 * i as f64,
                kl: 0.004 + 0.0005 * (i % 7) as f64,
                accepted: true,
                ..IterationMetrics::default()
            })
            .collect()
    }

    #[test]
    fn writes_svg_and_png_with_labels() {
        let dir = TestDir::new("plot");
        let (svg, png) = (dir.join("curve.svg"), dir.join("curve.png"));
        let mut m = curve(30);
        m[5].mean_return = f64::NAN; // skipped points do not break the plot
        plot_curves(&m, &svg, &png, Some(0.01)).unwrap();

        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(80)]);
        assert!(
            !text.contains("evaluation (deterministic)"),
            "no evaluation, no legend"
        );
        for label in [
            "environment steps (all devices)",
            "mean return (sum of rewards per episode)",
            "(nats)",
            "Mean episode return",
            "trust region δ = 0.01",
        ] {
            assert!(text.contains(label), "SVG lacks {label:?}");
        }
        assert!(text.contains("stroke-dasharray") || text.matches("<line").count() > 10);

        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(bytes.len() > 10_000, "PNG of {} bytes", bytes.len());
    }

    /// A run that evaluates gets the evaluations' curve and a legend naming both curves.
    #[test]
    fn evaluations_are_drawn_with_a_legend() {
        let dir = TestDir::new("plot-evaluation");
        let (svg, png) = (dir.join("curve.svg"), dir.join("curve.png"));
        let mut m = curve(30);
        for (i, record) in m.iter_mut().enumerate().filter(|(i, _)| i % 5 == 4) {
            record.eval_mean_return = Some(-900.0 + 30.0 * i as f64);
        }
        plot_curves(&m, &svg, &png, Some(0.01)).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        for label in [
            "evaluation (deterministic)",
            "training episodes (exploring)",
        ] {
            assert!(text.contains(label), "SVG lacks {label:?}");
        }
    }

    #[test]
    fn caption_text_is_rasterised() {
        // Only the caption lives in the top band of the bitmap: if fonts silently failed,
        // it would stay white.
        let (w, h) = SIZE;
        let mut buf = vec![0u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
            draw(root, &curve(5), Some(0.01)).unwrap();
        }
        let band = &buf[..(w * 40 * 3) as usize];
        let dark = band
            .chunks_exact(3)
            .filter(|p| p.iter().all(|&c| c < 128))
            .count();
        assert!(dark > 100, "only {dark} dark pixels in the caption band");
    }

    #[test]
    fn empty_and_single_point_metrics_still_plot() {
        let dir = TestDir::new("plot-empty");
        plot_curves(&[], &dir.join("e.svg"), &dir.join("e.png"), None).unwrap();
        plot_curves(
            &curve(1),
            &dir.join("o.svg"),
            &dir.join("o.png"),
            Some(0.02),
        )
        .unwrap();
        assert!(std::fs::metadata(dir.join("o.png")).unwrap().len() > 1000);
    }

    #[test]
    fn unwritable_png_path_is_an_error_naming_it() {
        let dir = TestDir::new("plot-bad");
        let err = plot_curves(
            &curve(3),
            &dir.join("c.svg"),
            &dir.join("missing/c.png"),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("missing/c.png"), "{err}");
    }

    #[test]
    fn padded_range_handles_degenerate_input() {
        assert_eq!(padded_range([].into_iter()), (0.0, 1.0));
        assert_eq!(padded_range([f64::NAN].into_iter()), (0.0, 1.0));
        let (lo, hi) = padded_range([5.0, 5.0].into_iter());
        assert!(lo < 5.0 && hi > 5.0);
        let (lo, hi) = padded_range([0.0, 10.0, f64::INFINITY].into_iter());
        assert_eq!((lo, hi), (-0.5, 10.5));
    }
}
