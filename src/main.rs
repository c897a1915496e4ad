fn main() -> std::process::ExitCode {
    xdr_ingest::cli::main()
}
