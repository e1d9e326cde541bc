//! `tether export`: a run's policy as a file to upload or a Rust source to flash.

use std::process::ExitCode;

use anyhow::Context;

use super::{ExportArgs, ExportFormat};
use crate::run::atomic_write::write_atomic;
use crate::run::folder::RunFolder;
use crate::run::policy_file::PolicyFile;

pub fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let folder = RunFolder::open(&args.run)?;
    let policy = PolicyFile::read_bin(&folder.policy_path())?;
    let out = match (&args.out, args.format) {
        (Some(path), _) => path.clone(),
        (None, ExportFormat::Bin) => folder.root().join("policy-export.bin"),
        (None, ExportFormat::Rust) => folder.root().join("policy.rs"),
    };
    match args.format {
        ExportFormat::Bin => policy.write_bin(&out)?,
        ExportFormat::Rust => {
            let source = policy.to_rust_source("policy");
            write_atomic(&out, source.as_bytes())
                .with_context(|| format!("cannot write {}", out.display()))?;
        }
    }
    println!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}
