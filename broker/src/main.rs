fn main() {
    eprintln!("mqd: not built yet");
    std::process::exit(2);
}
