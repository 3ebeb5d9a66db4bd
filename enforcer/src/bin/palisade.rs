//! palisade: the command line of the palisade node agent (see
//! `palisade_enforcer::cli`).

use std::process::ExitCode;

use clap::Parser;
use palisade_enforcer::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match cli::run(&cli, &mut stdout) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
