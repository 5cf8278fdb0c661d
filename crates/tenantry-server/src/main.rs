use clap::Parser;

// Password hashing allocates ~19 MiB per hash on many threads; glibc keeps
// such blocks in per-thread arenas (gigabytes of RSS after a login burst),
// mimalloc returns them to the system.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = tenantry_server::cli::Cli::parse();
    match cli.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
