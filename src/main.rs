fn main() {
    std::process::exit(gatewarden::cli::main());
}
