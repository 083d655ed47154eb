mod support;
use support::*;

#[test]
fn forward_round_trip_through_a_simulated_world() {
    let p = start_provisioned(&[]);
    let world = p.world();
    let r = get(
        p.relay.addr(),
        "/search?query=goblin",
        &[("x-api-key", p.keys.api_key.as_str())],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "search-result");
    drop(world);
}
