//! AFL entry point; the target itself is `fvtt_relay_fuzz::params` (src/lib.rs).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        fvtt_relay_fuzz::params(data);
    });
}
