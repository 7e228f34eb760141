//! Load generator (in progress).
fn main() {}
