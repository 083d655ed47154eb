//! The `fvtt-relay` binary: parse flags and environment into a `Config` (exit 2 when bad),
//! set up logging, open the data directory, and run the loop — or run a CLI subcommand.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use fvtt_relay::cli;
use fvtt_relay::config::{Config, Parsed};
use fvtt_relay::error::Fatal;
use fvtt_relay::relay::{Clock, Relay};
use fvtt_relay::server::Server;
use fvtt_relay::store::{self, Store};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Owner subcommands (`key`, `pair`, ...) before any relay option parsing (src/cli.rs).
    if args.first().is_some_and(|a| cli::is_command(a)) {
        return ExitCode::from(cli::run(&args));
    }
    let cfg = match Config::from_args(args.into_iter(), |k| std::env::var(k).ok()) {
        Ok(Parsed::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Run(cfg)) => cfg,
        Err(msg) => {
            eprintln!("fvtt-relay: {msg}\nRun 'fvtt-relay --help' for the list of options.");
            return ExitCode::from(2);
        }
    };
    if let Err(msg) = cfg.validate() {
        eprintln!("fvtt-relay: {msg}");
        return ExitCode::from(2);
    }
    match serve(cfg) {
        Ok(()) => {
            log::logger().flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
            log::logger().flush();
            eprintln!("fvtt-relay: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn serve(cfg: Config) -> Result<(), Fatal> {
    simple_logger::SimpleLogger::new()
        .with_level(cfg.log_level)
        .init()
        .map_err(|e| Fatal::Io(format!("logger: {e}")))?;
    let mut store = Store::open(&cfg.data_dir)?;
    if let Some(key) = store.state_mut().ensure_admin_key() {
        // Shown once: written to a 0600 file, never logged.
        let path = cfg.data_dir.join(cli::ADMIN_KEY_FILE);
        cli::write_secret_file(&path, &key)
            .map_err(|e| Fatal::State(format!("cannot write {}: {e}", path.display())))?;
        store
            .save()
            .map_err(|e| Fatal::State(format!("cannot save state: {e}")))?;
        log::info!(
            "created the admin key; it is in {} (readable by this user only)",
            path.display()
        );
    }
    let clock = Clock {
        base: Instant::now(),
        base_ms: store::unix_ms(),
    };
    let cfg_dir = cfg.data_dir.clone();
    let public_url = cfg.public_url.clone();
    let relay = Relay::new(cfg.clone(), store.state().clone(), clock);
    let mut server = Server::bind(cfg, store, relay)?;
    let addr = server.local_addr();
    // Where `fvtt-relay key ...` finds this relay while it holds the lock (src/cli.rs).
    let addr_file = cfg_dir.join(cli::ADDR_FILE);
    // Removed first: writing into a FIFO left there would block until a reader came.
    let _ = std::fs::remove_file(&addr_file);
    if let Err(e) = std::fs::write(&addr_file, format!("{addr}\n")) {
        log::warn!(
            "cannot write {}: {e}; CLI commands will not find this relay",
            addr_file.display()
        );
    }
    // The one line on stdout: scripts and tests read the bound port from it.
    println!("fvtt-relay listening on http://{addr}");
    let _ = std::io::stdout().flush();
    log::info!(
        "fvtt-relay {} listening on {addr}",
        env!("CARGO_PKG_VERSION")
    );
    // Where a new owner goes next; the key itself is never logged, only where it is.
    log::info!(
        "admin page: {}; the admin key is in {}",
        cli::admin_page_url(public_url.as_deref(), addr),
        cfg_dir.join(cli::ADMIN_KEY_FILE).display()
    );
    let result = server.run();
    let _ = std::fs::remove_file(&addr_file);
    result
}
