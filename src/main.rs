//! The `akbackup` binary: parse arguments, load the config, call the core, render, exit.
//!
//! Exit codes: 0 ok; 1 the operation ran but something failed or verify found problems;
//! 2 usage, config or environment error. Every error is one line on stderr:
//! `akbackup: <what failed>: <cause>`.

mod cli;
mod render;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    render::init_logging(args.log_level(), args.log_format());
    if let Err(e) = akbackup_core::cleanup::install_signal_handler() {
        render::log(
            render::Level::Warn,
            None,
            &format!(
                "cannot install signal handlers ({e}): Ctrl-C may leave staging directories behind"
            ),
        );
    }
    let result = cli::run(args);
    // A signal's cleanup may have pulled the ground from under the command: let it finish
    // and exit 130 rather than report what that caused.
    akbackup_core::cleanup::park_if_interrupted();
    match result {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            // Each part once: the core's error rule (`akbackup_core::error`) keeps a cause
            // either in a message or in the chain, never both.
            let line = err
                .chain()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ");
            render::log(render::Level::Error, None, &line);
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
