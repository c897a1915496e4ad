//! What the process tells its operator: log set-up (human-readable for the CLI, JSON lines on
//! stdout/stderr for the Functions host), the panic hook, and errors rendered on one line
//! with each cause once. Shared by the CLI and the handler.

use std::io::IsTerminal;

/// An error and its causes on one line, each cause once: delta-rs and object_store errors
/// repeat their source's text in their own message, which `{:#}` would print again for every
/// level of the chain.
pub fn render_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        let msg = msg.trim();
        if msg.is_empty() || out.contains(msg) {
            continue;
        }
        // a cause that repeats the start of the message so far adds only its tail
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(msg);
    }
    out
}

/// Panics as log events instead of the default hook's output. One panic is expected and
/// handled: when a full, read-only or permission-denied disk makes a Parquet upload fail as it
/// completes, delta-rs aborts the upload, object_store's `BufWriter` panics with "Already shut
/// down" (by design, once shutdown began), and delta-rs catches that panic and returns the
/// write error, which we report with its OS cause. That one is logged at debug; any other
/// panic is an error event with its message and location.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if msg == "Already shut down" && location.contains("object_store") {
            tracing::debug!(
                location,
                "upload aborted after a failed completion (handled by delta-rs)"
            );
        } else {
            tracing::error!(panic = %msg, location, "internal error (panic)");
        }
    }));
}

/// Log filter when `XDR_LOG` is not set. delta-rs logs the commit conflicts it meets at
/// ERROR and WARN ("conflict detected, aborting transaction", "table updated during
/// transaction"); we resolve those ourselves (redo against the new snapshot) and report the
/// outcome at the right level, so its transaction module is kept out of the log. Its writer
/// warns once per file when a failed upload leaves parts behind (a full disk makes that one
/// line per table); the failure itself reaches the log once, as our error.
pub fn default_log_filter(handler: bool) -> &'static str {
    if handler {
        "warn,deltalake_core::kernel::transaction=off,deltalake_core::datafile::writer=error,xdr_ingest=info"
    } else {
        "warn,deltalake_core::kernel::transaction=off,deltalake_core::datafile::writer=error"
    }
}

/// Logs: human-readable on stderr for the CLI; JSON lines for the handler, where the
/// Functions host reads stdout as Information and stderr as Error, so warnings and errors go
/// to stderr and everything else (the per-invocation summaries) to stdout.
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let filter = EnvFilter::try_from_env("XDR_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default_log_filter(json)));
    let _ = if json {
        let writer = std::io::stderr
            .with_max_level(tracing::Level::WARN)
            .or_else(std::io::stdout);
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .json()
            .with_current_span(true)
            .flatten_event(true)
            .try_init()
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}
