//! `aetherfs`: the command-line interface. See `aetherfs --help`.

mod auth;
mod cli;
mod commands;
mod progress;

use std::process::ExitCode;

use std::io::IsTerminal;

use clap::Parser;

/// jemalloc, with its background threads, hands freed memory back to the
/// system within seconds, even in an idle agent: glibc's allocator kept a
/// decoded manifest's freed heap resident for good (docs/agent.md, "Memory").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    exit_quietly_on_broken_pipe();
    let cli = cli::Cli::parse();
    init_tracing(matches!(cli.command, cli::Command::Hub(_)));
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            let mut line = String::new();
            for c in e.chain() {
                aetherfs_util::push_cause(&mut line, &c.to_string());
            }
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

/// `aetherfs ls | head`: once the reader of stdout is gone, stop quietly
/// with the status a shell shows for SIGPIPE (128 + 13), as Unix tools do.
/// Rust ignores SIGPIPE, so `println!` would panic with a backtrace instead.
fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload_as_str().unwrap_or_default();
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// Logs go to stderr; `AETHERFS_LOG` (or `RUST_LOG`) sets the filter.
/// Daemons log at info, one-shot commands only warnings.
fn init_tracing(daemon: bool) {
    let default = if daemon { "info" } else { "warn" };
    let filter =
        std::env::var("AETHERFS_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| default.to_string());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let json = std::env::var("AETHERFS_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
