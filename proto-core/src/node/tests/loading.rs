//! Loads and their limits: timeouts, the rate limiter, refusals inside a batch, keyspace
//! settings, warmup.

use super::*;
use crate::sim::KEYSPACE;
use crate::time::Duration;
use alloc::format;

#[test]
fn a_request_whose_load_hangs_is_answered_timed_out() {
    let mut n = node("a", "c");
    let get = Input::Get {
        request: RequestId(1),
        keyspace: Bytes::from_static(KEYSPACE),
        key: Bytes::from_static(b"k"),
        timeout: Some(Duration::from_millis(100)),
    };
    n.handle_input(Instant::ZERO, get).unwrap();
    drain(&mut n);
    assert_eq!(n.poll_timeout(), Some(Instant::from_millis(100)));
    n.handle_timeout(Instant::from_millis(100));
    assert!(drain(&mut n).contains(&Output::Reply {
        request: RequestId(1),
        reply: Reply::Get(Err(Error::TimedOut))
    }));
}

#[test]
fn rate_limited_loads_get_their_own_error() {
    let mut config = KeyspaceConfig::new(KEYSPACE, 1 << 20);
    config.limiter =
        Some(crate::LimiterConfig::new(crate::Rate::per_second(1).unwrap(), 1).unwrap());
    config.read_timeout = Duration::from_millis(10);
    let mut n = Node::new(NodeConfig::new("a", "c").with_keyspace(config), Instant::ZERO).unwrap();
    for i in 0..2u64 {
        let key = Bytes::from(format!("k{i}"));
        let input = Input::Get {
            request: RequestId(i),
            keyspace: Bytes::from_static(KEYSPACE),
            key,
            timeout: None,
        };
        n.handle_input(Instant::ZERO, input).unwrap();
    }
    let outputs = drain(&mut n);
    assert_eq!(outputs.iter().filter(|o| matches!(o, Output::Load { .. })).count(), 1);
    assert!(outputs.contains(&Output::Reply {
        request: RequestId(1),
        reply: Reply::Get(Err(Error::RateLimited))
    }));
}

/// Found in review: a batch part whose load was refused on the spot was answered before the
/// batch's state existed, so the batch waited for its deadline instead of answering at once.
#[test]
fn a_batch_with_a_refused_load_is_answered_at_once() {
    let mut config = KeyspaceConfig::new(KEYSPACE, 1 << 20);
    config.limiter =
        Some(crate::LimiterConfig::new(crate::Rate::per_second(1).unwrap(), 1).unwrap());
    config.read_timeout = Duration::from_millis(10);
    let mut n = Node::new(NodeConfig::new("a", "c").with_keyspace(config), Instant::ZERO).unwrap();
    let keys = alloc::vec![Bytes::from_static(b"k0"), Bytes::from_static(b"k1")];
    let input = Input::GetMany {
        request: RequestId(1),
        keyspace: Bytes::from_static(KEYSPACE),
        keys,
        timeout: None,
    };
    n.handle_input(Instant::ZERO, input).unwrap();
    let load = drain(&mut n).into_iter().find_map(|o| match o {
        Output::Load { load, .. } => Some(load),
        _ => None,
    });
    let result = LoadResult::Value { bytes: Bytes::from_static(b"v0"), expires_at: None };
    n.handle_input(Instant::from_millis(1), Input::Loaded { load: load.unwrap(), result }).unwrap();
    let reply = drain(&mut n).into_iter().find_map(|o| match o {
        Output::Reply { reply: Reply::GetMany(results), .. } => Some(results),
        _ => None,
    });
    let results = reply.expect("answered when the one load finished, not at the deadline");
    assert_eq!(results[0].as_ref().unwrap().bytes, Bytes::from_static(b"v0"));
    assert_eq!(results[1], Err(Error::RateLimited));
}

#[test]
fn keyspaces_inherit_the_node_limiter_unless_they_override_it() {
    let one_per_second = crate::LimiterConfig::new(crate::Rate::per_second(1).unwrap(), 1).unwrap();
    let generous = crate::LimiterConfig::new(crate::Rate::per_second(1_000).unwrap(), 100).unwrap();
    let mut own = KeyspaceConfig::new("own", 1 << 20);
    own.limiter = Some(generous);
    let mut config = NodeConfig::new("a", "c")
        .with_keyspace(KeyspaceConfig::new("inherits", 1 << 20))
        .with_keyspace(own);
    config.limiter = Some(one_per_second);
    let mut n = Node::new(config, Instant::ZERO).unwrap();
    let mut loads = |keyspace: &'static [u8]| {
        for i in 0..3u64 {
            let request = RequestId(i + if keyspace == b"own" { 100 } else { 0 });
            let key = Bytes::from(format!("k{i}"));
            let input = Input::Get {
                request,
                keyspace: Bytes::from_static(keyspace),
                key,
                timeout: Some(Duration::from_millis(10)),
            };
            n.handle_input(Instant::ZERO, input).unwrap();
        }
        drain(&mut n).iter().filter(|o| matches!(o, Output::Load { .. })).count()
    };
    assert_eq!(loads(b"inherits"), 1, "the node's limit of 1/s applies");
    assert_eq!(loads(b"own"), 3, "the keyspace's own limit applies");
}

#[test]
fn warmup_loads_warm_keys_this_node_comes_to_own() {
    let mut config = KeyspaceConfig::new(KEYSPACE, 1 << 20);
    config.warm_keys = (0..50).map(|i| Bytes::from(format!("warm-{i}"))).collect();
    let mut n = Node::new(NodeConfig::new("a", "c").with_keyspace(config), Instant::ZERO).unwrap();
    n.handle_input(
        Instant::ZERO,
        Input::SetPeers(alloc::vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]),
    )
    .unwrap();
    let outputs = drain(&mut n);
    let loads: Vec<&Output> = outputs.iter().filter(|o| matches!(o, Output::Load { .. })).collect();
    assert_eq!(loads.len(), 8, "bounded by warmup_concurrency");
    let owned = (0..50)
        .filter(|i| n.ring().owner(format!("warm-{i}").as_bytes()).is_some_and(|o| o == "a"))
        .count();
    assert!(outputs.contains(&Output::Event(Event::WarmupStarted { keys: owned })));
}

#[test]
fn create_and_update_refuse_the_same_bad_settings_and_a_refused_update_changes_nothing() {
    let mut n = node("a", "c");
    let zero_read = KeyspaceConfig { read_timeout: Duration::ZERO, ..KeyspaceConfig::new("z", 1) };
    let zero_write =
        KeyspaceConfig { write_timeout: Duration::ZERO, ..KeyspaceConfig::new("z", 1) };
    let mut no_hot_keys = KeyspaceConfig::new("z", 1);
    no_hot_keys.hot_keys.capacity = 0;
    let long_name = KeyspaceConfig::new(Bytes::from(alloc::vec![b'n'; 256]), 1);
    let cases = [
        (zero_read, ConfigError::BadTiming),
        (zero_write, ConfigError::BadTiming),
        (no_hot_keys, ConfigError::BadHotKeys),
    ];
    let before: Vec<KeyspaceConfig> = n.keyspaces().cloned().collect();
    for (bad, error) in cases {
        assert_eq!(n.create_keyspace(bad.clone()), Err(error.clone()), "create {bad:?}");
        let update = KeyspaceConfig { name: Bytes::from_static(KEYSPACE), ..bad };
        assert_eq!(n.update_keyspace(update.clone()), Err(error), "update {update:?}");
        assert_eq!(n.keyspaces().cloned().collect::<Vec<_>>(), before, "nothing changed");
    }
    assert_eq!(n.create_keyspace(long_name), Err(ConfigError::BadKeyspaceName));
    assert_eq!(
        n.update_keyspace(KeyspaceConfig::new("missing", 1)),
        Err(ConfigError::UnknownKeyspace)
    );
    let mut good = KeyspaceConfig::new(KEYSPACE, 1 << 10);
    good.read_timeout = Duration::from_millis(7);
    assert_eq!(n.update_keyspace(good.clone()), Ok(()));
    assert_eq!(n.keyspaces().cloned().collect::<Vec<_>>(), [good]);
}

#[test]
fn updating_a_keyspace_keeps_its_open_breaker_open() {
    let reset = Duration::from_secs(10);
    let mut config = KeyspaceConfig::new(KEYSPACE, 1 << 20);
    config.breaker = Some(crate::BreakerConfig::new(1, reset).unwrap());
    let mut n =
        Node::new(NodeConfig::new("a", "c").with_keyspace(config.clone()), Instant::ZERO).unwrap();
    let get = |request: u64| Input::Get {
        request: RequestId(request),
        keyspace: Bytes::from_static(KEYSPACE),
        key: Bytes::from_static(b"k"),
        timeout: None,
    };
    n.handle_input(Instant::ZERO, get(1)).unwrap();
    let load = drain(&mut n).into_iter().find_map(|o| match o {
        Output::Load { load, .. } => Some(load),
        _ => None,
    });
    let failed = LoadResult::Failed(Bytes::from_static(b"down"));
    n.handle_input(Instant::ZERO, Input::Loaded { load: load.unwrap(), result: failed }).unwrap();
    drain(&mut n);
    let open = Some(crate::BreakerState::Open { until: Instant::ZERO + reset });
    assert_eq!(n.keyspace_stats(KEYSPACE).unwrap().breaker, open);

    // Every kind of update: the same breaker settings, new ones, none (the node's default).
    let updates = [
        KeyspaceConfig { max_bytes: 1 << 10, ..config.clone() },
        KeyspaceConfig { breaker: Some(crate::BreakerConfig::new(3, reset).unwrap()), ..config },
        KeyspaceConfig::new(KEYSPACE, 1 << 20),
    ];
    for (request, update) in (2..).zip(updates) {
        n.update_keyspace(update.clone()).unwrap();
        assert_eq!(n.keyspace_stats(KEYSPACE).unwrap().breaker, open, "after {update:?}");
        n.handle_input(Instant::from_secs(1), get(request)).unwrap();
        let reply = Output::Reply {
            request: RequestId(request),
            reply: Reply::Get(Err(Error::CircuitOpen)),
        };
        assert_eq!(drain(&mut n), [reply], "still refused after {update:?}");
    }
}
