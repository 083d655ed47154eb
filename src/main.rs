fn main() {
    println!("fvtt-relay");
}
