//! AFL entry point; the target itself is `fvtt_relay_fuzz::ws_frames` (src/lib.rs).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        fvtt_relay_fuzz::ws_frames(data);
    });
}
