//! Runs a fuzz target's code on files, without AFL: `replay <target> <file or dir>...`.
//! A crash file from `tests/fuzz/out/<target>/default/crashes/` panics here with its message
//! and (RUST_BACKTRACE=1) a backtrace; a directory is replayed file by file.
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((name, paths)) = args.split_first() else {
        eprintln!("usage: replay <target> <file or dir>...");
        return ExitCode::from(2);
    };
    let Some((_, target)) = fvtt_relay_fuzz::TARGETS.iter().find(|(n, _)| n == name) else {
        let names: Vec<&str> = fvtt_relay_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("unknown target {name}; targets: {}", names.join(" "));
        return ExitCode::from(2);
    };
    let mut files = Vec::new();
    for p in paths {
        let p = Path::new(p);
        match std::fs::read_dir(p) {
            Ok(dir) => files.extend(dir.filter_map(|e| e.ok()).map(|e| e.path())),
            Err(_) => files.push(p.to_path_buf()),
        }
    }
    files.sort();
    for f in &files {
        let data = match std::fs::read(f) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{}: {e}", f.display());
                return ExitCode::FAILURE;
            }
        };
        eprintln!("{name} {}", f.display());
        target(&data);
    }
    eprintln!("{} input(s) ran without a crash", files.len());
    ExitCode::SUCCESS
}
