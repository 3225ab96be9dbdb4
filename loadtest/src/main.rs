fn main() {
    eprintln!("warren-loadtest: scenarios arrive with the load-harness issue");
    std::process::exit(2);
}
