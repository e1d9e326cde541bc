//! `tether plot`: redraw a run's curves from `metrics.jsonl`.

use std::process::ExitCode;

use anyhow::bail;

use super::PlotArgs;
use crate::run::config::RunConfig;
use crate::run::folder::RunFolder;
use crate::run::metrics::read_metrics;
use crate::run::plot::plot_curves;
use crate::trpo::hyperparams::TrpoConfig;

pub fn plot(args: PlotArgs) -> anyhow::Result<ExitCode> {
    let folder = RunFolder::open(&args.dir)?;
    let metrics = read_metrics(&folder.metrics_path())?;
    if metrics.is_empty() {
        bail!(
            "{} has no metrics yet; train first",
            folder.metrics_path().display()
        );
    }
    let target_kl = RunConfig::<TrpoConfig>::load(&folder.config_path())
        .ok()
        .map(|c| c.trpo.target_kl);
    let (svg, png) = match &args.out {
        Some(out) if out.extension().is_some_and(|e| e == "png") => {
            (out.with_extension("svg"), out.clone())
        }
        Some(out) => (out.clone(), out.with_extension("png")),
        None => (folder.curve_svg(), folder.curve_png()),
    };
    plot_curves(&metrics, &svg, &png, target_kl)?;
    println!("{}\n{}", svg.display(), png.display());
    Ok(ExitCode::SUCCESS)
}
