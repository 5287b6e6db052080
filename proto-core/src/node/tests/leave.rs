//! The graceful leave: late fetches, rerouting to the new owner, acknowledged goodbyes,
//! draining.

use super::*;
use crate::sim::{KEYSPACE, Sim, SimConfig};
use crate::time::Duration;
use alloc::format;

#[test]
fn a_peer_fetch_reaching_a_leaving_owner_mid_load_joins_that_load() {
    let mut sim = Sim::new(SimConfig {
        nodes: 3,
        source_delay: (Duration::from_millis(50), Duration::from_millis(50)),
        ..SimConfig::default()
    });
    let key = "leaving-owner";
    let owner = sim.owner(key).unwrap();
    let asker = (owner + 1) % 3;
    let mut requests = alloc::vec![sim.get(owner, key)];
    sim.advance(Duration::from_millis(5)); // the owner's load is in flight
    assert_eq!(sim.loads_by(owner), 1);
    // The owner leaves; the asker's fetch is still on the way and arrives during the leave.
    sim.leave(owner);
    requests.push(sim.get(asker, key));
    sim.run_until_idle(STEPS).unwrap();
    for request in &requests {
        assert!(value_of(sim.reply(*request)).is_some(), "{:?}", sim.reply(*request));
    }
    assert_eq!(sim.loads(key), 1, "the leaving owner's load served the late fetch too");
}

#[test]
fn a_fetch_refused_by_a_leaving_owner_goes_to_the_new_owner() {
    let mut sim = Sim::new(SimConfig {
        nodes: 3,
        source_delay: (Duration::from_millis(20), Duration::from_millis(20)),
        ..SimConfig::default()
    });
    // A key whose owner leaves, and whose new owner is neither the leaver nor the asker.
    let (key, owner, asker, heir) = (0..1_000)
        .find_map(|i| {
            let key = format!("moving-{i}");
            let owner = sim.owner(&key)?;
            let asker = (owner + 1) % 3;
            let heir = (owner + 2) % 3;
            let mut rest = alloc::vec![asker, heir];
            rest.sort_unstable();
            (sim.owner_among(&key, &rest) == Some(heir)).then_some((key, owner, asker, heir))
        })
        .expect("some key moves to the third node");
    // The asker's fetch crosses the owner's goodbye: the owner refuses it (it is not loading
    // the key), and by then the asker knows the key's new owner.
    sim.leave(owner);
    let request = sim.get(asker, &key);
    sim.run_until_idle(STEPS).unwrap();
    assert!(value_of(sim.reply(request)).is_some(), "{:?}", sim.reply(request));
    assert_eq!(sim.loads(&key), 1, "loaded once, by the new owner");
    assert_eq!(sim.loads_by(heir), 1, "the new owner (node {heir}) loaded it");
}

#[test]
fn a_leaving_node_drains_only_after_its_peers_acknowledged_the_goodbye() {
    use crate::wire::{FrameDecoder, Message, WireLimits};
    let mut n = node("a", "c");
    n.handle_input(
        Instant::ZERO,
        Input::Accepted { conn: ConnId(1), nonce: [0; 16], peer_identity: None },
    )
    .unwrap();
    n.handle_input(Instant::ZERO, Input::Received { conn: ConnId(1), data: &hello_from("b") })
        .unwrap();
    drain(&mut n);
    n.handle_input(Instant::ZERO, Input::Leave).unwrap();
    let outputs = drain(&mut n);
    assert!(!outputs.contains(&Output::Event(Event::Drained)), "the peer has not acknowledged");
    let mut decoder = FrameDecoder::new(WireLimits::default());
    for output in &outputs {
        if let Output::Transmit { conn: ConnId(1), data } = output {
            decoder.push(data).unwrap();
        }
    }
    let (header, message) = decoder.next_frame().unwrap().expect("the goodbye");
    assert_eq!(message, Message::Leaving);
    assert_ne!(header.request_id, 0, "a call the peer answers");
    let mut ack = Vec::new();
    Message::Ack(Ok(())).encode(header.request_id, &mut ack, &WireLimits::default()).unwrap();
    n.handle_input(Instant::ZERO, Input::Received { conn: ConnId(1), data: &ack }).unwrap();
    assert!(drain(&mut n).contains(&Output::Event(Event::Drained)));
}

#[test]
fn leave_tells_peers_and_drains() {
    let mut n = node("a", "c");
    n.handle_input(Instant::ZERO, Input::Leave).unwrap();
    assert!(drain(&mut n).contains(&Output::Event(Event::Drained)));
    let get = Input::Get {
        request: RequestId(1),
        keyspace: Bytes::from_static(KEYSPACE),
        key: Bytes::from_static(b"k"),
        timeout: None,
    };
    n.handle_input(Instant::ZERO, get).unwrap();
    assert!(drain(&mut n).contains(&Output::Reply {
        request: RequestId(1),
        reply: Reply::Get(Err(Error::ShuttingDown))
    }));
}
