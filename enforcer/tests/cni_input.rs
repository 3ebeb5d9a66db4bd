//! The CNI plugin reads untrusted input (its stdin and `CNI_*` variables):
//! whatever it gets, it answers with a configuration or an error, and never
//! panics.

use std::collections::HashMap;

use palisade_enforcer::cni::netconf::{CniArgs, CniEnv, NetConf};
use proptest::prelude::*;

const SEED: &str = r#"{"cniVersion":"1.0.0","name":"palisade","type":"palisade-cni","agentSocket":"/run/palisade/agent.sock","mtu":1450,"args":{"cni":{"labels":[{"key":"app","value":"web"}]},"palisade":{"serviceAccount":"sa"}},"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.0.0.2/32","interface":0}]}}"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_stdin_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = NetConf::parse(&bytes);
    }

    #[test]
    fn mutated_config_never_panics(
        cuts in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..8, "[ -~]{0,8}"), 1..6),
    ) {
        let mut text = SEED.to_owned();
        for (at, len, insert) in cuts {
            let start = at.index(text.len() + 1);
            let end = (start + len).min(text.len());
            text.replace_range(start..end, &insert);
        }
        let _ = NetConf::parse(text.as_bytes());
    }

    #[test]
    fn arbitrary_environment_never_panics(
        command in "(ADD|DEL|CHECK|VERSION|GC|[A-Z]{0,6})",
        args in "\\PC{0,80}",
        netns in "\\PC{0,40}",
        ifname in "\\PC{0,20}",
        id in "\\PC{0,40}",
    ) {
        let _ = args.parse::<CniArgs>();
        let vars: HashMap<&str, String> = HashMap::from([
            ("CNI_COMMAND", command),
            ("CNI_ARGS", args),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", ifname),
            ("CNI_CONTAINERID", id),
            ("CNI_PATH", "/opt/cni/bin".to_owned()),
        ]);
        let _ = CniEnv::from_vars(|k| vars.get(k).cloned());
    }
}

#[test]
fn seed_is_valid() {
    NetConf::parse(SEED.as_bytes()).expect("seed parses");
}
