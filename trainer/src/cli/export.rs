//! `tether export`: a run's policy as a file to upload, a Rust source or a C header to
//! flash, or an ONNX model for inference runtimes.

use std::process::ExitCode;

use anyhow::{anyhow, bail};

use super::{ExportArgs, ExportFormat};
use crate::interop::{DeployedPolicy, c_header, onnx};
use crate::run::folder::RunFolder;
use crate::run::{PolicyFile, write_atomic};

pub fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let folder = RunFolder::open(&args.run)?;
    let source = if args.best {
        folder.best_policy_path()
    } else {
        folder.policy_path()
    };
    if !source.exists() {
        if args.best {
            bail!(
                "{} has no {} (it is written by runs with an `[evaluation]` table, after \
                 their first evaluation); export its latest policy without --best",
                folder.root().display(),
                RunFolder::BEST_POLICY
            );
        }
        bail!(
            "{} has no policy yet ({} is written after the first iteration); train or resume \
             the run first",
            folder.root().display(),
            RunFolder::POLICY
        );
    }
    let policy = PolicyFile::read_bin(&source)?;
    let out = match (&args.out, args.format) {
        (Some(path), _) => path.clone(),
        (None, ExportFormat::Bin) => folder.root().join("policy-export.bin"),
        (None, ExportFormat::Rust) => folder.root().join("policy.rs"),
        (None, ExportFormat::Onnx) => folder.root().join("policy.onnx"),
        (None, ExportFormat::C) => folder.root().join("policy.h"),
    };
    let bytes = match args.format {
        ExportFormat::Bin => policy.to_bin_bytes(&out)?,
        ExportFormat::Rust => policy.to_rust_source("policy").into_bytes(),
        ExportFormat::Onnx => onnx::model_bytes(&DeployedPolicy::for_run(&folder, policy)?),
        ExportFormat::C => {
            c_header::header_source(&DeployedPolicy::for_run(&folder, policy)?).into_bytes()
        }
    };
    // Temporary file and rename: an existing file is replaced whole or not at all.
    // The I/O error alone: the temporary file's name would only confuse.
    write_atomic(&out, &bytes).map_err(|e| {
        let cause = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
        anyhow!(
            "cannot write {}: {cause}; check that its folder exists and is writable",
            out.display()
        )
    })?;
    println!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}
