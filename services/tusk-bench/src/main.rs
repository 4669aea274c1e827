use clap::Parser;

#[derive(Parser)]
#[command(name = "tusk-bench", about = "Load generator for tus 1.0.0 servers")]
struct Cli {
    #[command(flatten)]
    args: tusk_bench::BenchArgs,
}

#[tokio::main]
async fn main() {
    if let Err(e) = tusk_bench::run(Cli::parse().args).await {
        eprintln!("tusk bench: error: {e:#}");
        std::process::exit(1);
    }
}
